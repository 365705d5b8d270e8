"""The floor of the many-clients case: one server process and N client processes that
only exchange a word each through shared memory, with a fixed busy loop standing in for
each side's Python work per call, under a chosen waiting rule.

    python scripts/many_floor.py --clients 1,8 --work-us 4 --rule spin,sleep,batch

Rules (how a client waits for its reply; the server polls, and yields after 400 empty passes):
- spin:  poll the reply word until it changes (yield every 64 polls);
- yield: look once, then sched_yield, and again (the server wakes nobody);
- sleep: sleep in the kernel at once (FUTEX_WAIT on its reply word); the server wakes
         each sleeping client right after its reply (one FUTEX_WAKE per reply);
- batch: sleep at once on the server's one pass word; the server answers every waiting
         client of a pass, then bumps the pass word and wakes them all with one FUTEX_WAKE.
Prints one JSON line per (rule, clients): calls/s, and per call the CPU of the server and
of the clients and the context switches of both (from /proc). What it shows is what no
RPC code can beat on this machine: the cost of handing the CPU over, per call.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from notnets_rpc import _native  # noqa: E402

SLOT = 64  # one cache line per client: request word, reply word, sleep flag
PASS = 0   # the pass word, in line 0
STOP = 8


def busy(us: float) -> None:
    end = time.perf_counter() + us * 1e-6
    while time.perf_counter() < end:
        pass


def ctx(pid: int) -> int:
    n = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
            n += int(line.split()[1])
    return n


def cpu(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def server(mm: mmap.mmap, n: int, rule: str, work: float) -> None:
    w = memoryview(mm).cast("Q")
    base = (ctypes_addr(mm))
    seen = [0] * n
    empty = 0
    while not w[STOP // 8]:
        woke = False
        empty += 1
        if empty > 400:
            os.sched_yield()
        for i in range(n):
            o = (SLOT * (i + 1)) // 8
            r = w[o]
            if r != seen[i]:
                seen[i] = r
                empty = 0
                busy(work)
                w[o + 1] = r
                if w[o + 2]:
                    if rule == "sleep":
                        _native.futex_wake(base + (o + 1) * 8)
                    else:
                        woke = True
        if woke:
            w[PASS] += 1
            _native.futex_wake(base)


def ctypes_addr(mm: mmap.mmap) -> int:
    import ctypes
    c = ctypes.c_char.from_buffer(mm)
    a = ctypes.addressof(c)
    del c
    return a


def client(mm: mmap.mmap, i: int, rule: str, work: float, seconds: float, start_at: float) -> None:
    w = memoryview(mm).cast("Q")
    base = ctypes_addr(mm)
    o = (SLOT * (i + 1)) // 8
    calls = 0
    time.sleep(max(0.0, start_at - time.time()))
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        busy(work)
        v = w[o] + 1
        w[o] = v
        calls += 1
        if rule in ("spin", "yield"):
            k = 0
            mask = 63 if rule == "spin" else 0
            while w[o + 1] != v:
                k += 1
                if not k & mask:
                    os.sched_yield()
        else:
            while w[o + 1] != v:
                word = PASS if rule == "batch" else o + 1
                w[o + 2] = 1
                seen = w[word]
                if w[o + 1] != v:
                    _native.futex_wait(base + word * 8, seen, 0.01)
                w[o + 2] = 0
    os.write(1, f"{calls}\n".encode())


def run(n: int, rule: str, work: float, seconds: float) -> dict:
    path = f"/dev/shm/many-floor-{os.getpid()}"
    with open(path, "w+b") as f:
        f.truncate(SLOT * (n + 1))
        mm = mmap.mmap(f.fileno(), SLOT * (n + 1))
    os.unlink(path)
    spid = os.fork()
    if spid == 0:
        server(mm, n, rule, work)
        os._exit(0)
    start_at = time.time() + 0.3
    kids = []
    for i in range(n):
        r, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            os.dup2(wfd, 1)
            client(mm, i, rule, work, seconds, start_at)
            os._exit(0)
        os.close(wfd)
        kids.append((pid, r))
    time.sleep(max(0.0, start_at - time.time()))
    s_cpu, s_ctx = cpu(spid), ctx(spid)
    c_cpu = [cpu(p) for p, _ in kids]
    c_ctx = [ctx(p) for p, _ in kids]
    time.sleep(seconds * 0.95)
    s_cpu, s_ctx = cpu(spid) - s_cpu, ctx(spid) - s_ctx
    c_cpu = sum(cpu(p) for p, _ in kids) - sum(c_cpu)
    c_ctx = sum(ctx(p) for p, _ in kids) - sum(c_ctx)
    calls = 0
    for pid, r in kids:
        calls += int(os.read(r, 64) or b"0")
        os.waitpid(pid, 0)
    memoryview(mm).cast("Q")[STOP // 8] = 1
    os.waitpid(spid, 0)
    calls = max(1, calls)
    return {"rule": rule, "clients": n, "rps": round(calls / seconds), "server_cpu_us": round(1e6 * s_cpu / calls, 1),
            "client_cpu_us": round(1e6 * c_cpu / calls, 1), "server_ctx": round(s_ctx / calls, 2),
            "client_ctx": round(c_ctx / calls, 2), "load": os.getloadavg()[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", default="1,8")
    ap.add_argument("--rule", default="spin,sleep,batch")
    ap.add_argument("--work-us", type=float, default=4.0)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    for _ in range(args.rounds):
        for rule in args.rule.split(","):
            for n in (int(x) for x in args.clients.split(",")):
                print(json.dumps(run(n, rule, args.work_us, args.seconds)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
