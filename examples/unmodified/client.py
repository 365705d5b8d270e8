"""Greeter + Routes client written against grpc only: every call shape once, one line
per result (the same lines whatever carries the calls).

    python examples/unmodified/client.py --target HOST:PORT
"""

import argparse

import grpc

from protos import greeter_pb2, greeter_pb2_grpc, routes_pb2, routes_pb2_grpc

WALK = [(0, 0), (0, 5), (3, 5), (3, 1), (-2, 1)]
NOTES = [((1, 1), "first"), ((2, 2), "elsewhere"), ((1, 1), "second"), ((1, 1), "third")]


def point(xy):
    return routes_pb2.Point(x=xy[0], y=xy[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="localhost:50051")
    args = parser.parse_args()
    with grpc.insecure_channel(args.target) as channel:
        greeter = greeter_pb2_grpc.GreeterStub(channel)
        routes = routes_pb2_grpc.RoutesStub(channel)
        print("hello:", greeter.SayHello(greeter_pb2.HelloRequest(name="unmodified")).message)
        for reply in greeter.SayHelloStream(greeter_pb2.HelloRequest(name="stream", times=2)):
            print("hello stream:", reply.message)
        place = routes.PlaceAt(point((5, 5)))
        print(f"place at (5, 5): {place.name or '-'}")
        try:
            routes.PlaceAt(point((5000, 0)))
        except grpc.RpcError as exc:
            print(f"place at (5000, 0): {exc.code().name}: {exc.details()}")
        area = routes_pb2.Area(lo=point((0, 0)), hi=point((4, 4)))
        print("places in (0..4, 0..4):", ", ".join(p.name for p in routes.PlacesIn(area)))
        summary = routes.Walk(iter([point(p) for p in WALK]))
        print(f"walk: {summary.points} points, {summary.named_places} named, distance {summary.distance}")
        notes = (routes_pb2.Note(point=point(p), text=t) for p, t in NOTES)
        print("notes:", ", ".join(n.text for n in routes.Notes(notes)))


if __name__ == "__main__":
    main()
