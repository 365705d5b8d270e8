"""grpc health checking and server reflection, sync and aio, over the pool."""

from __future__ import annotations

import asyncio
from concurrent import futures

from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

import notnets_rpc
import notnets_rpc.aio

from .service import add_service

SERVICE = "echo.Echo"
NAMES = (SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME)


def test_health_and_reflection_on_a_sync_server(pool_path):
    server = notnets_rpc.server(futures.ThreadPoolExecutor(4), pool=pool_path)
    servicer = health.HealthServicer()
    servicer.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflection.enable_server_reflection(NAMES, server)
    server.add_endpoint("eco")
    server.start()
    try:
        with notnets_rpc.insecure_channel("notnets:eco", pool=pool_path) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            assert stub.Check(health_pb2.HealthCheckRequest(service=SERVICE)).status == \
                health_pb2.HealthCheckResponse.SERVING
            watch = stub.Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=10)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            servicer.set(SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
            watch.cancel()
            db = ProtoReflectionDescriptorDatabase(channel)
            assert set(db.get_services()) == set(NAMES)
    finally:
        server.stop(None).wait(5)


def test_aio_health_and_reflection_on_an_aio_server(pool_path):
    async def main():
        server = notnets_rpc.aio.server(pool=pool_path)
        add_service(server)
        servicer = health_aio.HealthServicer()
        await servicer.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        reflection.enable_server_reflection(NAMES, server)
        server.add_endpoint("eco")
        await server.start()
        try:
            async with notnets_rpc.aio.insecure_channel("notnets:eco", pool=pool_path) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
                watch = stub.Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=10)
                assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
                await servicer.set(SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
                assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
                watch.cancel()
            with notnets_rpc.insecure_channel("notnets:eco", pool=pool_path) as sync_channel:
                db = ProtoReflectionDescriptorDatabase(sync_channel)
                services = await asyncio.get_running_loop().run_in_executor(None, db.get_services)
                assert set(services) == set(NAMES)
        finally:
            await server.stop(None)

    asyncio.run(asyncio.wait_for(main(), 30))
