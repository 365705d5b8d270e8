"""Interposition: unmodified grpc / grpc.aio programs over the pool.

With ``NOTNETS_INTERPOSE=1`` and a pool (``NOTNETS_POOL``), the import hook
(``interpose_hook``, loaded by a .pth file that ``make setup`` installs) calls
``patch(grpc)`` as soon as a program imports grpc; ``python -m notnets_rpc.interpose
PROGRAM ARGS`` does the same for one program. Then:

- ``grpc.server`` / ``grpc.aio.server`` return servers whose ``add_insecure_port(addr)``
  listens on TCP as before and also publishes the services in the pool under the
  names ``tcp_names.names_for_bind`` gives (the host's name and addresses, or
  ``localhost@HOST`` for a loopback bind; port 0 resolved to the real port).
- ``grpc.insecure_channel`` / ``grpc.aio.insecure_channel`` return channels that, at
  their first call, look the target up in the pool (``tcp_names.names_for_target``):
  a live endpoint -> the call goes over the pool; anything else -> a real grpcio
  channel over TCP, unchanged. ``notnets:NAME`` targets go to the pool directly.
- A pool that cannot be used: one warning line on stderr, then TCP only.

Calls that notnets_rpc itself makes to those four functions get grpcio's own.
"""

from __future__ import annotations

import functools
import os
import runpy
import sys
import threading
from typing import Any, Callable, List, Optional, Sequence

import grpc
import grpc.aio

from . import grpc_native, tcp_names
# From the modules, not the package: the hook may patch grpc while notnets_rpc/__init__ is
# still running its own ``import grpc`` (a program that imports notnets_rpc first).
from .client.channel import SCHEME
from .client.channel import Channel as PoolChannel
from .serving.server import Server as PoolServer

ENV = "NOTNETS_INTERPOSE"
POOL_ENV = "NOTNETS_POOL"
STALE_ENV = "NOTNETS_STALE_MS"
HOOK_FILE = "notnets-interpose.pth"
_warned = False
_warn_lock = threading.Lock()


def enabled(environ: Optional[dict] = None) -> bool:
    return (environ if environ is not None else os.environ).get(ENV, "").strip() not in ("", "0")


def warn_once(reason: str) -> None:
    """The one line an unusable pool costs a process."""
    global _warned
    with _warn_lock:
        if _warned:
            return
        _warned = True
    sys.stderr.write(f"notnets: pool unusable ({reason}); using TCP\n")
    sys.stderr.flush()


def pool_path() -> Optional[str]:
    path = os.environ.get(POOL_ENV, "").strip()
    if not path:
        warn_once(f"{POOL_ENV} is not set")
        return None
    return path


def resolve(candidates: Sequence[str], path: str) -> Optional[str]:
    """The first candidate name with a live endpoint in the pool, else None."""
    from .errors import PoolError
    from .inspect import inspect_pool

    try:
        services = inspect_pool(path)["services"]
    except FileNotFoundError:
        warn_once(f"{path}: no such file")
        return None
    except (PoolError, OSError, ValueError) as exc:
        if "not formatted" not in str(exc) and "all zero" not in str(exc):
            warn_once(str(exc))
        return None
    stale_s = float(os.environ.get(STALE_ENV, "") or 3000) / 1000
    live = {s["name"] for s in services
            if s["state"] == "live" and s["heartbeat_age_s"] is not None and s["heartbeat_age_s"] < stale_s}
    for name in candidates:
        if name in live:
            return name
    return None


def _from_notnets() -> bool:
    """Was the patched function called by notnets_rpc itself (which wants grpcio's own)?"""
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame = frame.f_back
    caller = frame.f_globals.get("__name__", "") if frame is not None else ""
    return caller == "notnets_rpc" or caller.startswith("notnets_rpc.")


# -- sync channel ----------------------------------------------------------------------------------
class _Lazy:
    """A multicallable bound to the pool or to TCP at its first call."""

    __slots__ = ("_channel", "_shape", "_args", "_real")

    def __init__(self, channel: Any, shape: str, args: tuple) -> None:
        self._channel = channel
        self._shape = shape
        self._args = args
        self._real: Any = None

    def _bind(self) -> Any:
        real = self._real = getattr(self._channel._chosen(), self._shape)(*self._args)
        return real

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return (self._real or self._bind())(*args, **kwargs)

    def with_call(self, *args: Any, **kwargs: Any) -> Any:
        return (self._real or self._bind()).with_call(*args, **kwargs)

    def future(self, *args: Any, **kwargs: Any) -> Any:
        return (self._real or self._bind()).future(*args, **kwargs)


class _LazyUnaryUnary(_Lazy, grpc.UnaryUnaryMultiCallable):
    __slots__ = ()


class _LazyUnaryStream(_Lazy, grpc.UnaryStreamMultiCallable):
    __slots__ = ()


class _LazyStreamUnary(_Lazy, grpc.StreamUnaryMultiCallable):
    __slots__ = ()


class _LazyStreamStream(_Lazy, grpc.StreamStreamMultiCallable):
    __slots__ = ()


class _Chooser:
    """Decides, once, at the first use: the pool (a live endpoint for the target) or TCP."""

    def __init__(self, target: str, candidates: List[str], path: str, make_pool: Callable[[str], Any],
                 make_tcp: Callable[[], Any]) -> None:
        self._target = target
        self._candidates = candidates
        self._path = path
        self._make_pool = make_pool
        self._make_tcp = make_tcp
        self._real: Any = None
        self._lock = threading.Lock()
        self.endpoint: Optional[str] = None  # the pool endpoint used, if any

    def _chosen(self) -> Any:
        real = self._real
        if real is None:
            with self._lock:
                if self._real is None:
                    name = resolve(self._candidates, self._path)
                    self.endpoint = name
                    self._real = self._make_pool(name) if name is not None else self._make_tcp()
                real = self._real
        return real


class InterposedChannel(_Chooser, grpc.Channel):
    def unary_unary(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                    _registered_method: Optional[bool] = False) -> Any:
        return _LazyUnaryUnary(self, "unary_unary", (method, request_serializer, response_deserializer))

    def unary_stream(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                     _registered_method: Optional[bool] = False) -> Any:
        return _LazyUnaryStream(self, "unary_stream", (method, request_serializer, response_deserializer))

    def stream_unary(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                     _registered_method: Optional[bool] = False) -> Any:
        return _LazyStreamUnary(self, "stream_unary", (method, request_serializer, response_deserializer))

    def stream_stream(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                      _registered_method: Optional[bool] = False) -> Any:
        return _LazyStreamStream(self, "stream_stream", (method, request_serializer, response_deserializer))

    def subscribe(self, callback: Callable, try_to_connect: bool = False) -> None:
        self._chosen().subscribe(callback, try_to_connect=try_to_connect)

    def unsubscribe(self, callback: Callable) -> None:
        self._chosen().unsubscribe(callback)

    def close(self) -> None:
        if self._real is not None:
            self._real.close()

    def __enter__(self) -> "InterposedChannel":
        return self

    def __exit__(self, *exc: Any) -> bool:
        self.close()
        return False


def insecure_channel(target: str, options: Any = None, compression: Any = None) -> grpc.Channel:
    if _from_notnets():
        return grpc_native.insecure_channel(target, options, compression)
    path = pool_path()
    if path is not None and target.startswith(SCHEME):
        return PoolChannel(target, pool=path, options=options)
    candidates = tcp_names.names_for_target(target)
    if path is None or not candidates:
        return grpc_native.insecure_channel(target, options, compression)
    return InterposedChannel(target, candidates, path,
                             lambda name: PoolChannel(SCHEME + name, pool=path, options=options),
                             lambda: grpc_native.insecure_channel(target, options, compression))


# -- aio channel --------------------------------------------------------------------------------------
class InterposedAioChannel(_Chooser, grpc.aio.Channel):
    def unary_unary(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                    _registered_method: Optional[bool] = False) -> Any:
        return _Lazy(self, "unary_unary", (method, request_serializer, response_deserializer))

    def unary_stream(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                     _registered_method: Optional[bool] = False) -> Any:
        return _Lazy(self, "unary_stream", (method, request_serializer, response_deserializer))

    def stream_unary(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                     _registered_method: Optional[bool] = False) -> Any:
        return _Lazy(self, "stream_unary", (method, request_serializer, response_deserializer))

    def stream_stream(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                      _registered_method: Optional[bool] = False) -> Any:
        return _Lazy(self, "stream_stream", (method, request_serializer, response_deserializer))

    async def close(self, grace: Optional[float] = None) -> None:
        if self._real is not None:
            await self._real.close(grace)

    async def __aenter__(self) -> "InterposedAioChannel":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close(None)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._chosen().get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._chosen().wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._chosen().channel_ready()


def aio_insecure_channel(target: str, options: Any = None, compression: Any = None,
                         interceptors: Any = None) -> grpc.aio.Channel:
    from .aio import Channel as AioPoolChannel

    if _from_notnets():
        return grpc_native.aio_insecure_channel(target, options, compression, interceptors)
    path = pool_path()
    if path is not None and target.startswith(SCHEME):
        return AioPoolChannel(PoolChannel(target, pool=path, options=options), interceptors)
    candidates = tcp_names.names_for_target(target)
    if path is None or not candidates:
        return grpc_native.aio_insecure_channel(target, options, compression, interceptors)
    return InterposedAioChannel(
        target, candidates, path,
        lambda name: AioPoolChannel(PoolChannel(SCHEME + name, pool=path, options=options), interceptors),
        lambda: grpc_native.aio_insecure_channel(target, options, compression, interceptors))


# -- servers ----------------------------------------------------------------------------------------------
class InterposedServer(grpc.Server):
    """grpcio's server for TCP, and a pool server publishing what add_insecure_port binds."""

    def __init__(self, tcp: grpc.Server, pool: Optional[PoolServer]) -> None:
        self._tcp = tcp
        self._pool = pool

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Any) -> None:
        self._tcp.add_generic_rpc_handlers(generic_rpc_handlers)
        if self._pool is not None:
            self._pool.add_generic_rpc_handlers(generic_rpc_handlers)

    def add_registered_method_handlers(self, service_name: str, method_handlers: Any) -> None:
        self._tcp.add_registered_method_handlers(service_name, method_handlers)
        if self._pool is not None:
            self._pool.add_registered_method_handlers(service_name, method_handlers)

    def add_insecure_port(self, address: str) -> int:
        port = self._tcp.add_insecure_port(address)
        if self._pool is not None and port:
            for name in tcp_names.names_for_bind(address, port):
                self._pool.add_endpoint(name)
        return port

    def add_secure_port(self, address: str, server_credentials: Any) -> int:
        return self._tcp.add_secure_port(address, server_credentials)

    def add_endpoint(self, name: str) -> None:
        if self._pool is not None:
            self._pool.add_endpoint(name)

    def start(self) -> None:
        self._tcp.start()
        if self._pool is not None:
            try:
                self._pool.start()
            except Exception as exc:
                warn_once(str(exc))
                self._pool.stop(None)
                self._pool = None

    def stop(self, grace: Optional[float]) -> threading.Event:
        events = [self._tcp.stop(grace)]
        if self._pool is not None:
            events.append(self._pool.stop(grace))
        both = threading.Event()

        def wait() -> None:
            for ev in events:
                ev.wait()
            both.set()
        threading.Thread(target=wait, name="notnets-interposed-stop", daemon=True).start()
        return both

    def wait_for_termination(self, timeout: Optional[float] = None) -> bool:
        timed_out = self._tcp.wait_for_termination(timeout)
        if self._pool is not None and not timed_out:
            timed_out = self._pool.wait_for_termination(timeout)
        return timed_out

    @property
    def pool_server(self) -> Optional[PoolServer]:
        return self._pool


def server(thread_pool: Any = None, handlers: Any = None, interceptors: Any = None, options: Any = None,
           maximum_concurrent_rpcs: Optional[int] = None, compression: Any = None, xds: bool = False) -> grpc.Server:
    tcp = grpc_native.server(thread_pool, handlers, interceptors, options, maximum_concurrent_rpcs, compression, xds)
    if _from_notnets():
        return tcp
    path = pool_path()
    if path is None:
        return tcp
    pool = PoolServer(thread_pool, pool=path, handlers=handlers, interceptors=interceptors, options=options,
                      maximum_concurrent_rpcs=maximum_concurrent_rpcs, compression=compression)
    return InterposedServer(tcp, pool)


def aio_server(migration_thread_pool: Any = None, handlers: Any = None, interceptors: Any = None,
               options: Any = None, maximum_concurrent_rpcs: Optional[int] = None,
               compression: Any = None) -> grpc.aio.Server:
    from .aio import Server as AioServer

    if _from_notnets():
        return grpc_native.aio_server(migration_thread_pool, handlers, interceptors, options,
                                      maximum_concurrent_rpcs, compression)
    path = pool_path()
    if path is None:
        return grpc_native.aio_server(migration_thread_pool, handlers, interceptors, options,
                                      maximum_concurrent_rpcs, compression)
    return AioServer(migration_thread_pool, handlers, interceptors, options, maximum_concurrent_rpcs, compression,
                     pool=path, names_for_port=tcp_names.names_for_bind,
                     on_pool_error=lambda exc: warn_once(str(exc)))


# -- patching ---------------------------------------------------------------------------------------------
def _replacement(original: Callable, replacement: Callable) -> Callable:
    @functools.wraps(original)
    def interposed(*args: Any, **kwargs: Any) -> Any:
        return replacement(*args, **kwargs)
    setattr(interposed, grpc_native.ORIGINAL_ATTR, original)
    return interposed


def patch(grpc_module: Any = grpc) -> None:
    """Replace the four constructors on ``grpc`` and ``grpc.aio`` (idempotent)."""
    aio = grpc_module.aio
    for owner, attr, replacement in ((grpc_module, "server", server),
                                     (grpc_module, "insecure_channel", insecure_channel),
                                     (aio, "server", aio_server),
                                     (aio, "insecure_channel", aio_insecure_channel)):
        current = getattr(owner, attr)
        if hasattr(current, grpc_native.ORIGINAL_ATTR):
            continue
        setattr(owner, attr, _replacement(current, replacement))


def unpatch(grpc_module: Any = grpc) -> None:
    for owner in (grpc_module, grpc_module.aio):
        for attr in ("server", "insecure_channel"):
            current = getattr(owner, attr)
            setattr(owner, attr, grpc_native.original(current))


def install_hook(site_dir: Optional[str] = None) -> str:
    """Write the .pth file that loads ``interpose_hook`` at interpreter start (when
    $NOTNETS_INTERPOSE is set; otherwise it costs one environment lookup)."""
    import sysconfig

    target = os.path.join(site_dir or sysconfig.get_paths()["purelib"], HOOK_FILE)
    line = ("import os; os.environ.get('NOTNETS_INTERPOSE', '').strip() not in ('', '0') and "
            "exec(\"import importlib.util as u, os\\n"
            "s = u.find_spec('notnets_rpc')\\n"
            "p = s and os.path.join(s.submodule_search_locations[0], 'interpose_hook.py')\\n"
            "p and os.path.exists(p) and exec(open(p).read(), {'__name__': 'notnets_interpose_hook'})\")\n")
    with open(target, "w") as f:
        f.write(line)
    return target


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m notnets_rpc.interpose [-m MODULE | PROGRAM] ARGS``, or ``--install-hook``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--install-hook"]:
        print(install_hook(args[1] if len(args) > 1 else None))
        return 0
    if not args or args[0] in ("-h", "--help"):
        print("usage: python -m notnets_rpc.interpose [-m MODULE | PROGRAM.py] [ARGS...]\n"
              "       python -m notnets_rpc.interpose --install-hook [SITE_DIR]", file=sys.stderr)
        return 2
    os.environ[ENV] = "1"  # children of the program are interposed too (with the hook installed)
    patch(grpc)
    if args[0] == "-m":
        if len(args) < 2:
            print("interpose: -m needs a module name", file=sys.stderr)
            return 2
        import importlib.util
        try:
            found = importlib.util.find_spec(args[1]) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            print(f"interpose: no module named {args[1]!r}", file=sys.stderr)
            return 2
        sys.argv = args[1:]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        if not os.path.exists(args[0]):
            print(f"interpose: {args[0]}: no such file", file=sys.stderr)
            return 2
        sys.argv = args
        sys.path.insert(0, os.path.dirname(os.path.abspath(args[0])))
        runpy.run_path(args[0], run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
