"""``notnets_rpc.aio.server``: grpc.aio's server API, serving the pool and, for
``add_insecure_port``, TCP through a real grpc.aio server.

The pool side is a sync ``notnets_rpc.Server`` whose handlers are the servicer's,
bridged (``servicer.bridged``) so that coroutines run on the loop that called
``start()``; while calls come, that loop reads the rings itself (``LoopReader``).
Unary-unary calls are answered from the loop; each streaming async call in progress
holds one of the sync server's threads while its task runs (``THREADS`` of them).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent import futures
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import grpc
import grpc.aio

from .. import grpc_native
from .. import Server as SyncServer
from ..serving.server import check_generic_handlers
from .bridge import in_thread
from .loop_reader import LoopReader
from .servicer import bridged

_log = logging.getLogger("notnets_rpc.aio.server")

THREADS = 512
BRIDGES_KEPT = 256  # bridged handlers kept for lookups through interceptors


class _BridgedGeneric(grpc.GenericRpcHandler):
    def __init__(self, generic: grpc.GenericRpcHandler, server: "Server") -> None:
        self._generic = generic
        self._server = server

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Optional[grpc.RpcMethodHandler]:
        return bridged(self._generic.service(handler_call_details), self._server)


class _Intercepting(grpc.GenericRpcHandler):
    """With aio server interceptors: each lookup runs the (async) chain on the loop."""

    def __init__(self, server: "Server") -> None:
        self._server = server

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Optional[grpc.RpcMethodHandler]:
        server = self._server
        handler = asyncio.run_coroutine_threadsafe(server._intercept(0, handler_call_details), server._loop).result()
        return server._bridge(handler)


class Server(grpc.aio.Server):
    def __init__(self, migration_thread_pool: Optional[futures.Executor] = None,
                 handlers: Optional[Sequence[grpc.GenericRpcHandler]] = None,
                 interceptors: Optional[Sequence[Any]] = None, options: Optional[Sequence[Tuple[str, Any]]] = None,
                 maximum_concurrent_rpcs: Optional[int] = None, compression: Any = None, *,
                 pool: Optional[str] = None, host_id: Optional[int] = None,
                 names_for_port: Optional[Callable[[str, int], Iterable[str]]] = None,
                 on_pool_error: Optional[Callable[[Exception], None]] = None) -> None:
        """``names_for_port(address, port)``: endpoint names to publish for each TCP port
        (interposition); ``on_pool_error``: called instead of raising when the pool is
        unusable at start (interposition: warn, serve TCP only)."""
        self._interceptors = list(interceptors or ())
        for i in self._interceptors:
            if not isinstance(i, grpc.aio.ServerInterceptor):
                raise ValueError(f"Interceptor {i} must be a grpc.aio.ServerInterceptor")
        self._tcp_args = dict(migration_thread_pool=migration_thread_pool, interceptors=interceptors or None,
                              options=options, maximum_concurrent_rpcs=maximum_concurrent_rpcs,
                              compression=compression)
        self._threads = futures.ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="notnets-aio")
        self._sync = SyncServer(self._threads, pool=pool, options=options,
                                maximum_concurrent_rpcs=maximum_concurrent_rpcs, host_id=host_id)
        self._tcp: Optional[grpc.aio.Server] = None
        self._generic: List[grpc.GenericRpcHandler] = []
        self._registered: Dict[str, Dict[str, grpc.RpcMethodHandler]] = {}
        self._names_for_port = names_for_port
        self._on_pool_error = on_pool_error
        self._has_endpoints = False
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._loop_thread = 0
        self._reader: Optional[LoopReader] = None
        self._bridges: Dict[Any, grpc.RpcMethodHandler] = {}
        if self._interceptors:
            self._sync.add_generic_rpc_handlers((_Intercepting(self),))
        if handlers:
            self.add_generic_rpc_handlers(handlers)

    # -- registration ------------------------------------------------------------------------------
    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        check_generic_handlers(generic_rpc_handlers)
        self._generic.extend(generic_rpc_handlers)
        if self._tcp is not None:
            self._tcp.add_generic_rpc_handlers(generic_rpc_handlers)
        if not self._interceptors:
            self._sync.add_generic_rpc_handlers([_BridgedGeneric(h, self) for h in generic_rpc_handlers])

    def add_registered_method_handlers(self, service_name: str, method_handlers: Dict[str, Any]) -> None:
        self._registered.setdefault(service_name, {}).update(method_handlers)
        if self._tcp is not None and hasattr(self._tcp, "add_registered_method_handlers"):
            self._tcp.add_registered_method_handlers(service_name, method_handlers)
        if not self._interceptors:
            self._sync.add_registered_method_handlers(
                service_name, {m: bridged(h, self) for m, h in method_handlers.items()})

    def add_endpoint(self, name: str) -> None:
        """Publish the services under ``name`` in the pool (clients use ``notnets:NAME``)."""
        self._sync.add_endpoint(name)
        self._has_endpoints = True

    def add_insecure_port(self, address: str) -> int:
        port = self._tcp_server().add_insecure_port(address)
        if self._names_for_port is not None and port:
            for name in self._names_for_port(address, port):
                self.add_endpoint(name)
        return port

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        return self._tcp_server().add_secure_port(address, server_credentials)

    def _tcp_server(self) -> grpc.aio.Server:
        if self._tcp is None:
            self._tcp = grpc_native.aio_server(**self._tcp_args)
            if self._generic:
                self._tcp.add_generic_rpc_handlers(self._generic)
            for service, handlers in self._registered.items():
                if hasattr(self._tcp, "add_registered_method_handlers"):
                    self._tcp.add_registered_method_handlers(service, handlers)
        return self._tcp

    async def _intercept(self, i: int, details: grpc.HandlerCallDetails) -> Optional[grpc.RpcMethodHandler]:
        if i == len(self._interceptors):
            service, _, method = details.method.lstrip("/").partition("/")
            handler = self._registered.get(service, {}).get(method)
            if handler is not None:
                return handler
            for generic in self._generic:
                handler = generic.service(details)
                if handler is not None:
                    return handler
            return None
        return await self._interceptors[i].intercept_service(lambda d: self._intercept(i + 1, d), details)

    def _bridge(self, handler: Optional[grpc.RpcMethodHandler]) -> Optional[grpc.RpcMethodHandler]:
        """``bridged(handler)``, made once per handler: a lookup through interceptors runs
        per call, and bridging a unary-unary handler makes a class (``answered_later``)."""
        if handler is None:
            return None
        try:
            return self._bridges[handler]
        except KeyError:
            pass
        except TypeError:  # (a handler that does not hash)
            return bridged(handler, self)
        if len(self._bridges) >= BRIDGES_KEPT:  # interceptors that make a new handler per call
            self._bridges.clear()
        made = self._bridges[handler] = bridged(handler, self)
        return made

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._reader = LoopReader(loop, self._sync)
        if self._has_endpoints:
            try:
                await in_thread(loop, self._sync.start)  # claims directory slots: may wait for a stale holder
            except Exception as exc:
                if self._on_pool_error is None:
                    raise
                self._on_pool_error(exc)
                self._sync.stop(None)
        else:
            self._sync.start()
        if self._tcp is not None:
            await self._tcp.start()

    async def stop(self, grace: Optional[float]) -> None:
        loop = asyncio.get_running_loop()
        stopped = self._sync.stop(grace)
        waits = [in_thread(loop, stopped.wait)]
        if self._tcp is not None:
            waits.append(self._tcp.stop(grace))
        await asyncio.gather(*waits)

    async def wait_for_termination(self, timeout: Optional[float] = None) -> bool:
        loop = asyncio.get_running_loop()
        waits = [in_thread(loop, self._sync.wait_for_termination, timeout)]
        if self._tcp is not None:
            waits.append(self._tcp.wait_for_termination(timeout))
        return any(await asyncio.gather(*waits))

    # -- what tests and tools look at ---------------------------------------------------------------
    @property
    def pool_server(self) -> SyncServer:
        return self._sync
