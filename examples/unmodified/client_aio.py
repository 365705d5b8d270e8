"""Greeter + Routes client written against grpc.aio only: the same calls and lines as
client.py.

    python examples/unmodified/client_aio.py --target HOST:PORT
"""

import argparse
import asyncio

import grpc
import grpc.aio

from client import NOTES, WALK, point
from protos import greeter_pb2, greeter_pb2_grpc, routes_pb2, routes_pb2_grpc


async def run(target):
    async with grpc.aio.insecure_channel(target) as channel:
        greeter = greeter_pb2_grpc.GreeterStub(channel)
        routes = routes_pb2_grpc.RoutesStub(channel)
        print("hello:", (await greeter.SayHello(greeter_pb2.HelloRequest(name="unmodified"))).message)
        async for reply in greeter.SayHelloStream(greeter_pb2.HelloRequest(name="stream", times=2)):
            print("hello stream:", reply.message)
        place = await routes.PlaceAt(point((5, 5)))
        print(f"place at (5, 5): {place.name or '-'}")
        try:
            await routes.PlaceAt(point((5000, 0)))
        except grpc.RpcError as exc:
            print(f"place at (5000, 0): {exc.code().name}: {exc.details()}")
        area = routes_pb2.Area(lo=point((0, 0)), hi=point((4, 4)))
        print("places in (0..4, 0..4):", ", ".join([p.name async for p in routes.PlacesIn(area)]))

        async def walk():
            for p in WALK:
                yield point(p)
        summary = await routes.Walk(walk())
        print(f"walk: {summary.points} points, {summary.named_places} named, distance {summary.distance}")
        call = routes.Notes()
        for p, text in NOTES:
            await call.write(routes_pb2.Note(point=point(p), text=text))
        await call.done_writing()
        print("notes:", ", ".join([n.text async for n in call]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="localhost:50051")
    asyncio.run(run(parser.parse_args().target))


if __name__ == "__main__":
    main()
