"""Greeter + Routes server written against grpc only (no notnets_rpc import).

    python examples/unmodified/server.py --port [::]:0

Prints "serving on port N" when ready; stops on SIGTERM. Run it with NOTNETS_INTERPOSE=1
and NOTNETS_POOL (or under `python -m notnets_rpc.interpose`) and it also serves the pool.
"""

import argparse
import signal
import threading
from concurrent import futures

import grpc

from places import name_at
from protos import greeter_pb2, greeter_pb2_grpc, routes_pb2, routes_pb2_grpc


class Greeter(greeter_pb2_grpc.GreeterServicer):
    def SayHello(self, request, context):
        return greeter_pb2.HelloReply(message=f"Hello, {request.name}!")

    def SayHelloStream(self, request, context):
        for i in range(max(1, request.times)):
            yield greeter_pb2.HelloReply(message=f"Hello #{i + 1}, {request.name}!")


class Routes(routes_pb2_grpc.RoutesServicer):
    def PlaceAt(self, request, context):
        if abs(request.x) > 1000 or abs(request.y) > 1000:
            context.abort(grpc.StatusCode.OUT_OF_RANGE, f"({request.x}, {request.y}) is off the map")
        return routes_pb2.Place(point=request, name=name_at(request.x, request.y))

    def PlacesIn(self, request, context):
        for x in range(request.lo.x, request.hi.x + 1):
            for y in range(request.lo.y, request.hi.y + 1):
                if name_at(x, y):
                    yield routes_pb2.Place(point=routes_pb2.Point(x=x, y=y), name=name_at(x, y))

    def Walk(self, request_iterator, context):
        points = named = distance = 0
        last = None
        for point in request_iterator:
            points += 1
            named += bool(name_at(point.x, point.y))
            if last is not None:
                distance += abs(point.x - last.x) + abs(point.y - last.y)
            last = point
        return routes_pb2.WalkSummary(points=points, named_places=named, distance=distance)

    def Notes(self, request_iterator, context):
        seen = {}
        for note in request_iterator:
            key = (note.point.x, note.point.y)
            for earlier in seen.get(key, []):
                yield earlier
            seen.setdefault(key, []).append(note)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", default="[::]:50051", help="address to listen on (port 0: any)")
    args = parser.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    greeter_pb2_grpc.add_GreeterServicer_to_server(Greeter(), server)
    routes_pb2_grpc.add_RoutesServicer_to_server(Routes(), server)
    port = server.add_insecure_port(args.port)
    server.start()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    print(f"serving on port {port}", flush=True)
    stopping.wait()
    server.stop(0.5).wait(5)


if __name__ == "__main__":
    main()
