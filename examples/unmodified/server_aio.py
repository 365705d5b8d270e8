"""Greeter + Routes server written against grpc.aio only (no notnets_rpc import).

    python examples/unmodified/server_aio.py --port [::]:0

Prints "serving on port N" when ready; stops on SIGTERM.
"""

import argparse
import asyncio
import signal

import grpc
import grpc.aio

from places import name_at
from protos import greeter_pb2, greeter_pb2_grpc, routes_pb2, routes_pb2_grpc


class Greeter(greeter_pb2_grpc.GreeterServicer):
    async def SayHello(self, request, context):
        return greeter_pb2.HelloReply(message=f"Hello, {request.name}!")

    async def SayHelloStream(self, request, context):
        for i in range(max(1, request.times)):
            yield greeter_pb2.HelloReply(message=f"Hello #{i + 1}, {request.name}!")


class Routes(routes_pb2_grpc.RoutesServicer):
    async def PlaceAt(self, request, context):
        if abs(request.x) > 1000 or abs(request.y) > 1000:
            await context.abort(grpc.StatusCode.OUT_OF_RANGE, f"({request.x}, {request.y}) is off the map")
        return routes_pb2.Place(point=request, name=name_at(request.x, request.y))

    async def PlacesIn(self, request, context):
        for x in range(request.lo.x, request.hi.x + 1):
            for y in range(request.lo.y, request.hi.y + 1):
                if name_at(x, y):
                    yield routes_pb2.Place(point=routes_pb2.Point(x=x, y=y), name=name_at(x, y))

    async def Walk(self, request_iterator, context):
        points = named = distance = 0
        last = None
        async for point in request_iterator:
            points += 1
            named += bool(name_at(point.x, point.y))
            if last is not None:
                distance += abs(point.x - last.x) + abs(point.y - last.y)
            last = point
        return routes_pb2.WalkSummary(points=points, named_places=named, distance=distance)

    async def Notes(self, request_iterator, context):
        seen = {}
        async for note in request_iterator:
            key = (note.point.x, note.point.y)
            for earlier in seen.get(key, []):
                yield earlier
            seen.setdefault(key, []).append(note)


async def serve(address):
    server = grpc.aio.server()
    greeter_pb2_grpc.add_GreeterServicer_to_server(Greeter(), server)
    routes_pb2_grpc.add_RoutesServicer_to_server(Routes(), server)
    port = server.add_insecure_port(address)
    await server.start()
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    print(f"serving on port {port}", flush=True)
    await stopping.wait()
    await server.stop(0.5)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", default="[::]:50051", help="address to listen on (port 0: any)")
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
