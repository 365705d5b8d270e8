#!/usr/bin/env python3
"""The floor of the 64 B unary design in Python: the ring protocol's steps, nothing else.

What the least a NotNets round trip can cost in this interpreter: the same frames
(16-byte header packed in place, one copy of the body, the head word stored; the reader
loads the head, unpacks the header, copies the body out, stores the tail) through two
rings in a shared mapping, the same four protobuf operations (the client serializes the
EchoRequest and parses the EchoReply, the server parses the request, builds the reply
and serializes it), but no grpc API: no channel, stub, call state, context, lock,
liveness, deadline, validation beyond what the ring read itself checks.

    scripts/hot_floor.py --callgrind          # instructions per round trip, one thread
    scripts/hot_floor.py --procs --calls 200000  # two processes spinning: p50, p99, calls/s

``--raw`` drops the protobuf steps (the bytes go as they are).
"""

from __future__ import annotations

import argparse
import mmap
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RING = 1 << 16
HDR = struct.Struct("@IBBHII")
CALL_HEAD = struct.Struct("<IHH")  # the CALL body's head: timeout_us, method length, metadata length
METHOD = b"/echo.Echo/Unary"
PREFIX = CALL_HEAD.pack(0, len(METHOD), 0) + METHOD
# layout: word 0 request head, word 8 request tail, word 16 response head, word 24 response tail;
# request ring at 4096, response ring at 4096 + RING
REQ_DATA, RESP_DATA = 4096, 4096 + RING
SIZE = 4096 + 2 * RING


class End:
    """One end's view of the two rings (``out`` it writes, ``inn`` it reads)."""

    def __init__(self, mm: mmap.mmap, out_data: int, out_head: int, in_data: int, in_head: int) -> None:
        view = memoryview(mm)
        self.words = view.cast("Q")
        self.out = view[out_data:out_data + RING]
        self.inn = view[in_data:in_data + RING]
        self.out_h, self.in_h = out_head >> 3, in_head >> 3
        self.in_t = self.in_h + 1
        self.head = 0  # bytes written to ``out``
        self.tail = 0  # bytes read from ``inn``

    def put(self, kind: int, cid: int, body: bytes) -> None:
        n = len(body)
        head = self.head
        end = head + ((n + 23) & -8)
        pos = head % RING
        if pos > RING - 256:  # near the end: start over at 0 (the reader skips by the same rule; frames < 256 B)
            head, pos = head + RING - pos, 0
            end = head + ((n + 23) & -8)
        out = self.out
        HDR.pack_into(out, pos, n, kind, 0, 0x4E4E, cid, 0)
        out[pos + 16:pos + 16 + n] = body
        self.head = end
        self.words[self.out_h] = end

    def read(self):
        tail = self.tail
        head = self.words[self.in_h]
        if head == tail:
            return None
        pos = tail % RING
        if pos > RING - 256:
            tail, pos = tail + RING - pos, 0
        n, kind, flags, magic, cid, aux = HDR.unpack_from(self.inn, pos)
        end = tail + ((n + 23) & -8)
        if magic != 0x4E4E or end > head:
            raise ValueError("bad frame")
        body = self.inn[pos + 16:pos + 16 + n].tobytes()
        self.tail = end
        self.words[self.in_t] = end
        return cid, body


def parts(raw: bool):
    from notnets_bench.echo.server import echo_pb2
    request = echo_pb2.EchoRequest(payload=b"x" * 64)
    if raw:
        return (lambda r: r), (lambda b: b), (lambda b: b), (lambda r: r), (lambda r: r), bytes(64)
    return (echo_pb2.EchoRequest.SerializeToString, echo_pb2.EchoReply.FromString, echo_pb2.EchoRequest.FromString,
            lambda req: echo_pb2.EchoReply(payload=req.payload), echo_pb2.EchoReply.SerializeToString, request)


def client_end(mm: mmap.mmap) -> End:
    return End(mm, REQ_DATA, 0, RESP_DATA, 16)


def server_end(mm: mmap.mmap) -> End:
    return End(mm, RESP_DATA, 16, REQ_DATA, 0)


def one_thread(calls: int, raw: bool) -> None:
    """Client and server steps in one thread, in turn: what callgrind counts."""
    ser, parse_reply, parse_req, handle, ser_reply, request = parts(raw)
    at = len(PREFIX)
    with tempfile.TemporaryFile(dir="/dev/shm") as f:
        f.truncate(SIZE)
        mm = mmap.mmap(f.fileno(), SIZE)
        c, s = client_end(mm), server_end(mm)
        for i in range(calls + 200):
            cid = i + 1
            c.put(1, cid, PREFIX + ser(request))  # client: CALL
            got = c.read()  # one empty poll, as count_hot_path's client sees
            assert got is None
            scid, body = s.read()  # server
            if not body.startswith(PREFIX):
                raise ValueError("another method")
            s.put(2, scid, ser_reply(handle(parse_req(body[at:]))))
            rcid, reply = c.read()  # client: STATUS
            if rcid != cid:
                raise ValueError("another call's answer")
            parse_reply(reply)
        del c, s
        mm.close()


def serve(path: str, raw: bool, calls: int) -> None:
    _, _, parse_req, handle, ser_reply, _ = parts(raw)
    at = len(PREFIX)
    with open(path, "r+b") as f:
        mm = mmap.mmap(f.fileno(), SIZE)
    s = server_end(mm)
    read, put = s.read, s.put
    for _ in range(calls):
        got = read()
        while got is None:
            got = read()
        cid, body = got
        if not body.startswith(PREFIX):
            raise ValueError("another method")
        put(2, cid, ser_reply(handle(parse_req(body[at:]))))


def two_procs(calls: int, raw: bool) -> dict:
    """Client here, server in a child process, both spinning: p50, p99, calls/s."""
    ser, parse_reply, _, _, _, request = parts(raw)
    with tempfile.NamedTemporaryFile(dir="/dev/shm") as f:
        f.truncate(SIZE)
        child = subprocess.Popen([sys.executable, __file__, "--serve", f.name, "--calls", str(calls)]
                                 + (["--raw"] if raw else []))
        try:
            mm = mmap.mmap(f.fileno(), SIZE)
            c = client_end(mm)
            read, put = c.read, c.put
            lat = []
            now = time.perf_counter
            t0 = now()
            for i in range(calls):
                t = now()
                put(1, i + 1, PREFIX + ser(request))
                got = read()
                while got is None:
                    got = read()
                parse_reply(got[1])
                lat.append(now() - t)
            total = now() - t0
            child.wait(10)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    lat.sort()
    half = lat[len(lat) // 2:]  # the second half: warmed up
    half.sort()
    return {"p50_us": half[len(half) // 2] * 1e6, "p99_us": half[int(len(half) * 0.99)] * 1e6,
            "calls_per_s": calls / total}


def callgrind(raw: bool) -> int:
    totals = []
    for n in (1000, 3000):
        with tempfile.NamedTemporaryFile(suffix=".cg") as out:
            subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out.name}", sys.executable,
                            __file__, "--calls", str(n)] + (["--raw"] if raw else []), check=True,
                           capture_output=True)
            text = Path(out.name).read_text(errors="replace")
            totals.append(int(re.search(r"^(?:summary|totals): (\d+)", text, re.M).group(1)))
    return (totals[1] - totals[0]) // 2000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--raw", action="store_true", help="no protobuf: bytes as they are")
    parser.add_argument("--callgrind", action="store_true", help="instructions per round trip")
    parser.add_argument("--procs", action="store_true", help="two processes: p50, p99, calls/s")
    parser.add_argument("--serve", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.raw, args.calls)
    elif args.callgrind:
        print(f"floor{' (raw)' if args.raw else ''}: {callgrind(args.raw)} instructions per round trip")
    elif args.procs:
        r = two_procs(args.calls, args.raw)
        print(f"floor{' (raw)' if args.raw else ''}: p50 {r['p50_us']:.2f} us, p99 {r['p99_us']:.2f} us, "
              f"{r['calls_per_s']:,.0f} calls/s")
    else:
        one_thread(args.calls, args.raw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
