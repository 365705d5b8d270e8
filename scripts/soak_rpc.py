#!/usr/bin/env python3
"""Soak notnets_rpc under mixed concurrent load (not run in CI).

One server process, client threads in this process and client processes (each with
threads), sizes 64 B-1 MiB, deadlines, cancels, server and client streams (the mix of
tests/rpc/load.py). Prints once a second: calls/s (the server's published counter),
outcomes by status code (this process's threads; the child processes' at the end),
the server's heartbeat age as seen from here, and the server's RSS. When the heartbeat
stands still for 2 s it asks the server for a stack dump (SIGUSR1, on its stderr).

    scripts/soak_rpc.py --seconds 60 --threads 32 --procs 8 --proc-threads 2 --pool-mib 256
    scripts/soak_rpc.py --kill-restart 50      # kill/restart server and clients N times

Exit status 0 when: no UNAVAILABLE while the server lived, no CORRUPT answer, every
thread and process ended, heartbeat age stayed under 1 s, and after idling the server's
total RSS (VmRSS) is back within 10 MiB of its start. Its memory report (SIGUSR2,
tests/rpc/load.py ``memory_report``) at start and after idling says where memory is:
/proc's split of RSS (its own heap is RssAnon; pool pages it still maps count as
RssShmem, which drop back as channels close: mapping.drop_pages), glibc's heap, and with
--trace-malloc Python's top allocation sites.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import notnets_rpc  # noqa: E402
from rpc import load  # noqa: E402


def _env(host: int = 0) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), str(ROOT), env.get("PYTHONPATH", "")])
    env["NOTNETS_HOST_ID"] = str(host)
    return env


RSS_TARGET_MIB = 10  # issue 11: the server's memory back within 10 MiB of its start after idling


def _rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _start_server(pool: str, name: str, workers: int, env: Optional[dict] = None) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "rpc.load", "serve", pool, name, str(workers)],
                            stdout=subprocess.PIPE, text=True, env={**_env(), **(env or {})})
    line = proc.stdout.readline()
    if "serving" not in line:
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc


def _server_calls(watch: "load.HeartbeatWatch") -> int:
    from notnets_rpc.wire import layout as L

    off = watch._offset()
    return 0 if off is None else watch._pool.mem.load(off - L.DIR_HEARTBEAT + L.DIR_CALLS)


def _memory_report(server: subprocess.Popen, path: str) -> dict:
    """Ask the server for its memory_report() (tests/rpc/load.py) and wait for it."""
    before = os.path.getsize(path) if os.path.exists(path) else 0
    server.send_signal(signal.SIGUSR2)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        if os.path.exists(path) and os.path.getsize(path) > before:
            with open(path) as f:
                f.seek(before)
                line = f.readline()
            if line.endswith("\n"):
                return json.loads(line)
        time.sleep(0.05)
    return {}


def soak(args: argparse.Namespace, pool: str) -> int:
    name = "soak"
    report_path = f"{pool}.memreport"
    env = {load.MEMREPORT_ENV: report_path}
    if args.trace_malloc:
        env["PYTHONTRACEMALLOC"] = "1"
    env.update(item.split("=", 1) for item in args.server_env)
    server = _start_server(pool, name, args.workers, env)
    children = []
    ok = True
    try:
        watch = load.HeartbeatWatch(pool, name)
        start_report = _memory_report(server, report_path)
        start_rss = _rss_mib(server.pid)
        for i in range(args.procs):
            children.append(subprocess.Popen(
                [sys.executable, "-m", "rpc.load", "client", pool, name, str(args.proc_threads), str(args.seconds),
                 str(100 + i)], stdout=subprocess.PIPE, text=True, env=_env(host=i % 2)))
        tally = load.Tally()
        channel = notnets_rpc.insecure_channel(f"notnets:{name}", pool=pool)
        runner = threading.Thread(target=lambda: tally.add("ENDED" if load.run_threads(
            channel, args.threads, args.seconds, 1, tally) else "HUNG"), daemon=True)
        runner.start()
        began = last = time.monotonic()
        last_calls = _server_calls(watch)
        dumped = False
        while runner.is_alive() or any(c.poll() is None for c in children):
            time.sleep(0.05)
            age = watch.sample()
            if age > 2 and not dumped:
                dumped = True
                print("heartbeat stalled: asking the server for a stack dump", flush=True)
                server.send_signal(signal.SIGUSR1)
            now = time.monotonic()
            if now - last >= 1:
                calls = _server_calls(watch)
                print(f"t={now - began:5.1f}s calls/s={(calls - last_calls) / (now - last):8.0f} "
                      f"heartbeat_age={age:5.2f}s (max {watch.max_age:4.2f}) rss={_rss_mib(server.pid):6.1f}MiB "
                      f"outcomes={json.dumps(tally.snapshot(), sort_keys=True)}", flush=True)
                last, last_calls = now, calls
            if now - began > args.seconds + 60:
                print("HANG: workers still running 60 s after the end", flush=True)
                ok = False
                break
        channel.close()
        totals = collections.Counter(tally.snapshot())
        for child in children:
            out, _ = child.communicate(timeout=30)
            for line in out.splitlines():
                if line.startswith("{"):
                    report = json.loads(line)
                    totals.update(report["outcomes"])
                    ok &= report["ended"]
            ok &= child.returncode == 0
        idle_end = time.monotonic() + args.idle
        while time.monotonic() < idle_end:
            time.sleep(0.1)
            watch.sample()
        end_rss = _rss_mib(server.pid)
        end_report = _memory_report(server, report_path)
        print(f"server memory at start: {json.dumps(start_report)}")
        print(f"server memory after {args.idle:.0f} s idle: {json.dumps(end_report)}")
        print(f"outcomes: {json.dumps(dict(totals), sort_keys=True)}")
        print(f"server RSS: start {start_rss:.1f} MiB, after {args.idle:.0f} s idle {end_rss:.1f} MiB; "
              f"heartbeat max age {watch.max_age:.2f} s")
        delta = {key: end_report.get(key, 0) - start_report.get(key, 0) for key in ("VmRSS", "RssAnon", "RssShmem")}
        grown = delta["VmRSS"] if "VmRSS" in end_report and "VmRSS" in start_report else end_rss - start_rss
        print(f"server RSS after idling: {grown:+.1f} MiB against its start (target: within {RSS_TARGET_MIB} MiB): "
              f"{'met' if grown <= RSS_TARGET_MIB else 'NOT MET'}; of it its own memory (RssAnon) "
              f"{delta['RssAnon']:+.1f} MiB, pool pages it still maps (RssShmem) {delta['RssShmem']:+.1f} MiB")
        ok &= grown <= RSS_TARGET_MIB
        ok &= server.poll() is None and not totals.get("UNAVAILABLE") and not totals.get("CORRUPT")
        ok &= watch.max_age < 1.0 and not totals.get("HUNG")
        watch.close()
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(10)
        server.kill()
        server.wait(10)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def kill_restart(args: argparse.Namespace, pool: str) -> int:
    """Kill the server and a client mid-load N times; every client must end every time."""
    name = "kr"
    for i in range(args.kill_restart):
        server = _start_server(pool, name, args.workers)
        client = subprocess.Popen([sys.executable, "-m", "rpc.load", "client", pool, name, "2", "1.0", str(i)],
                                  stdout=subprocess.PIPE, text=True, env=_env())
        victim = subprocess.Popen([sys.executable, "-m", "rpc.load", "client", pool, name, "2", "30", str(i)],
                                  stdout=subprocess.DEVNULL, env=_env())
        time.sleep(0.5)
        victim.kill()
        server.kill()
        server.wait(10)
        victim.wait(10)
        try:
            client.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            client.kill()
            print(f"iteration {i}: HANG (a client did not end 30 s after its server died)")
            return 1
        print(f"iteration {i}: ok", flush=True)
    print("PASS")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--threads", type=int, default=32, help="client threads in this process (one channel)")
    parser.add_argument("--procs", type=int, default=8, help="client processes")
    parser.add_argument("--proc-threads", type=int, default=2, help="threads per client process")
    parser.add_argument("--workers", type=int, default=8, help="server thread pool size")
    parser.add_argument("--pool-mib", type=int, default=256)
    parser.add_argument("--idle", type=float, default=10, help="seconds of idling before the final RSS")
    parser.add_argument("--kill-restart", type=int, default=0, metavar="N")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="an environment variable for the server process only (e.g. MALLOC_ARENA_MAX=1)")
    parser.add_argument("--trace-malloc", action="store_true",
                        help="run the server with PYTHONTRACEMALLOC=1: its memory reports name the top Python sites")
    args = parser.parse_args()
    pool = f"/dev/shm/notnets-soak-{uuid.uuid4().hex[:8]}"
    notnets_rpc.create_pool(pool, args.pool_mib << 20)
    try:
        return kill_restart(args, pool) if args.kill_restart else soak(args, pool)
    finally:
        os.unlink(pool)
        if os.path.exists(f"{pool}.memreport"):
            os.unlink(f"{pool}.memreport")


if __name__ == "__main__":
    sys.exit(main())
