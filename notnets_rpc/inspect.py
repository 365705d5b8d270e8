"""Read-only snapshot of a pool: header, services, channels, in-flight calls, counters.

Maps the pool read-only and never writes. Every field is read as untrusted: a value
that fails a check is reported as such, never followed.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
import os
from typing import Any, Dict, List

from .wire import layout as L
from .mapping import Mapping, PathLike
from .memory import Memory
from .pool import now_ms


def _age(ms: int) -> float | None:
    if not ms:
        return None
    return round((now_ms() - ms) / 1000, 3)


def _when(ms: int) -> str | None:
    if not ms:
        return None
    try:
        return _dt.datetime.fromtimestamp(ms / 1000, _dt.timezone.utc).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return None


# A QEMU run's backing file holds the pool where the guest's DAX device starts, behind the
# CXL region's metadata (6 MiB in our guests; device-dax aligns it to 2 MiB).
DAX_STEP = 2 << 20
DAX_SEARCH = 64 << 20


def pool_offset(buf: Any) -> int:
    """Where the pool starts in ``buf``: 0, or the first 2 MiB step within 64 MiB that
    holds the pool magic (a backing file seen from the host); 0 if none does."""
    if bytes(buf[:8]) == L.MAGIC:
        return 0
    for at in range(DAX_STEP, min(len(buf), DAX_SEARCH), DAX_STEP):
        if bytes(buf[at : at + 8]) == L.MAGIC:
            return at
    return 0


WATCH_S = 1.0  # how long inspect watches a live entry's heartbeat for a change (beats come every 0.1 s)


def inspect_pool(path: PathLike, watch_s: float = WATCH_S) -> Dict[str, Any]:
    """The snapshot as plain data (the --json output); raises PoolError on a bad pool.

    ``path`` may also be the backing file of a QEMU run's CXL device, where the pool
    starts at the DAX device's offset ("offset" in the snapshot). A directory entry
    that says "live" is only a claim (its server may have died without unpublishing,
    e.g. before `down --keep-pools`): each one's heartbeat is watched for up to
    ``watch_s`` seconds of this machine's clock, and ``heartbeat_moving`` says whether
    it changed, as clients judge liveness (docs/rpc.md), never by comparing clocks."""
    mapping = Mapping(path, writable=False)
    offset = pool_offset(mapping.mm)
    window = memoryview(mapping.mm)[offset:]
    mem = Memory(window, writable=False)
    try:
        lay = L.parse_superblock(mem)
        return {
            "path": os.fspath(path),
            "offset": offset,
            "header": {
                "magic": L.MAGIC.decode(),
                "layout_version": L.LAYOUT_VERSION,
                "pool_bytes": lay.pool_bytes,
                "mapped_bytes": mem.size,
                "uuid": L.format_uuid(lay.uuid),
                "created": _when(lay.created_ms),
                "max_hosts": lay.max_hosts,
                "dir_slots_per_host": lay.dir_slots,
                "channels_per_host": lay.channels,
                "ring_bytes": lay.ring_bytes,
                "lanes_per_host": lay.lanes_per_host,
                "lane_bytes": lay.lane_bytes,
                "offsets": {"hosts": lay.hosts_offset, "directory": lay.dir_offset,
                            "channels": lay.channels_offset, "lane_table": lay.lane_ctl_offset,
                            "rings": lay.rings_offset, "lanes": lay.lanes_offset},
            },
            "coherence": _coherence(path, lay),
            "hosts": [{"host": h, "channel_bell": mem.load(lay.host_entry(h) + L.HOST_CHANNEL_BELL),
                       "directory_bell": mem.load(lay.host_entry(h) + L.HOST_DIR_BELL)}
                      for h in range(lay.max_hosts)
                      if mem.load(lay.host_entry(h) + L.HOST_CHANNEL_BELL) or mem.load(lay.host_entry(h) + L.HOST_DIR_BELL)],
            "services": _watch_heartbeats(mem, lay, _services(mem, lay), watch_s),
            "channels": _channels(mem, lay),
            "lanes": _lanes(mem, lay),
        }
    finally:
        mem.release()
        window.release()
        mapping.close()


def _coherence(path: PathLike, lay: L.Layout) -> Dict[str, Any]:
    """How the pool was formatted, and the non-coherent model that runs it, if any
    (docs/coherence.md). A host's view shows that host's caches; the device shows what
    the hosts have written back."""
    from . import noncoherent_views as V

    out: Dict[str, Any] = {"formatted": lay.coherence, "model": None}
    found = V.find_model(path)
    if found is not None:
        directory, host = found
        model = V.read_model(directory)
        reports = V.read_reports(directory)
        out["model"] = {"dir": directory, "hosts": model["hosts"], "evictions_per_s": model.get("evictions_per_s"),
                        "seed": model.get("seed"), "view_of_host": host, "reports": len(reports),
                        "last_report": reports[-1]["message"] if reports else None}
    return out


def _services(mem: Memory, lay: L.Layout) -> List[Dict[str, Any]]:
    out = []
    for h in range(lay.max_hosts):
        for s in range(lay.dir_slots):
            off = lay.dir_entry(h, s)
            gen, state = L.unpack_state(mem.load(off + L.DIR_STATE))
            if state == L.DIR_FREE and not gen:
                continue
            out.append({
                "host": h, "slot": s, "index": lay.dir_index(h, s), "name": L.read_name(mem, off),
                "generation": gen & L.DIR_GEN_MASK, "state": L.DIR_STATE_NAMES.get(state, f"invalid({state})"),
                "pid": mem.load(off + L.DIR_PID), "heartbeat_age_s": _age(mem.load(off + L.DIR_HEARTBEAT)),
                "started": _when(mem.load(off + L.DIR_STARTED)),
                "calls": mem.load(off + L.DIR_CALLS), "errors": mem.load(off + L.DIR_ERRORS),
                "bytes_in": mem.load(off + L.DIR_BYTES_IN), "bytes_out": mem.load(off + L.DIR_BYTES_OUT),
            })
    return out


def _watch_heartbeats(mem: Memory, lay: L.Layout, services: List[Dict[str, Any]],
                      watch_s: float) -> List[Dict[str, Any]]:
    """Set each live service's ``heartbeat_moving``: True once its heartbeat word
    changes within ``watch_s`` (polled every 50 ms), False if it stood still; None for
    entries that do not claim to be live."""
    first = {}
    for svc in services:
        svc["heartbeat_moving"] = None
        if svc["state"] == "live":
            first[svc["index"]] = (svc, mem.load(lay.dir_entry(svc["host"], svc["slot"]) + L.DIR_HEARTBEAT))
    deadline = time.monotonic() + watch_s
    while first:
        for index, (svc, beat) in list(first.items()):
            if mem.load(lay.dir_entry(svc["host"], svc["slot"]) + L.DIR_HEARTBEAT) != beat:
                svc["heartbeat_moving"] = True
                del first[index]
        if not first or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    for svc, _ in first.values():
        svc["heartbeat_moving"] = False
    return services


def _backlog(mem: Memory, head_off: int, tail_off: int, ring: int) -> Any:
    head, tail = mem.load(head_off), mem.load(tail_off)
    n = head - tail
    return n if 0 <= n <= ring else f"corrupt (head {head}, tail {tail})"


def _lanes(mem: Memory, lay: L.Layout) -> List[Dict[str, Any]]:
    """Extent lanes ever claimed (wire/extents.py): who holds them, for which channel."""
    out = []
    for h in range(lay.max_hosts):
        for i in range(lay.lanes_per_host):
            off = lay.lane_ctl(h, i)
            gen, state = L.unpack_state(mem.load(off + L.LANE_CLAIM))
            if not gen:
                continue
            channel = mem.load(off + L.LANE_CHANNEL)
            direction = mem.load(off + L.LANE_DIRECTION)
            out.append({"host": h, "lane": i, "generation": gen,
                        "state": L.LANE_STATE_NAMES.get(state, f"invalid({state})"), "pid": mem.load(off + L.LANE_PID),
                        "channel": f"{(channel >> 16) & 0xFFFF}/{channel & 0xFFFF}",
                        "channel_generation": channel >> 32,
                        "direction": {0: "requests", 1: "responses"}.get(direction, f"invalid({direction})"),
                        "bytes_written": mem.load(off + L.LANE_HEAD)})
    return out


def _channels(mem: Memory, lay: L.Layout) -> List[Dict[str, Any]]:
    names = {}
    for h in range(lay.max_hosts):
        for s in range(lay.dir_slots):
            names[lay.dir_index(h, s)] = L.read_name(mem, lay.dir_entry(h, s))
    out = []
    for h in range(lay.max_hosts):
        for k in range(lay.channels):
            off = lay.channel(h, k)
            gen, state = L.unpack_state(mem.load(off + L.CH_CLAIM))
            if state == L.CH_FREE and not gen:
                continue
            index, dir_gen = L.unpack_target(mem.load(off + L.CH_TARGET))
            acc_gen, verdict = L.unpack_state(mem.load(off + L.CH_ACCEPT))
            started = mem.load(off + L.CH_CALLS_STARTED)
            done = mem.load(off + L.CH_CALLS_DONE)
            answered = acc_gen == gen
            out.append({
                "host": h, "slot": k, "generation": gen, "state": L.CH_STATE_NAMES.get(state, f"invalid({state})"),
                "target": {"index": index, "generation": dir_gen,
                           "name": names.get(index) if index in names else "invalid"},
                "server_verdict": L.ACC_NAMES.get(verdict, f"invalid({verdict})") if answered else "pending",
                "client_pid": mem.load(off + L.CH_CLIENT_PID),
                "client_heartbeat_age_s": _age(mem.load(off + L.CH_CLIENT_HEARTBEAT)),
                "opened": _when(mem.load(off + L.CH_OPENED)),
                "server_pid": mem.load(off + L.CH_SERVER_PID),
                "calls_started": started, "calls_done": done,
                "in_flight": max(0, started - done) if state == L.CH_OPEN else 0,
                "errors": mem.load(off + L.CH_ERRORS),
                "bytes_in": mem.load(off + L.CH_BYTES_IN), "bytes_out": mem.load(off + L.CH_BYTES_OUT),
                # a closed or free slot's counters mean nothing until it is claimed again
                "request_backlog": _backlog(mem, off + L.CH_REQ_HEAD, off + L.CH_REQ_TAIL, lay.ring_bytes)
                if state == L.CH_OPEN else None,
                "response_backlog": _backlog(mem, off + L.CH_RESP_HEAD, off + L.CH_RESP_TAIL, lay.ring_bytes)
                if state == L.CH_OPEN else None,
            })
    return out


def format_inspection(snap: Dict[str, Any]) -> str:
    """Human-readable text for ``notnets-emu pool inspect``."""
    hd = snap["header"]
    where = f" at byte {snap['offset']} (a DAX device's start in its backing file)" if snap.get("offset") else ""
    lines = [
        f"pool {snap['path']}{where}: NotNets layout v{hd['layout_version']}, {hd['pool_bytes']} bytes "
        f"(mapped {hd['mapped_bytes']}), uuid {hd['uuid']}, created {hd['created']}",
        f"  {hd['max_hosts']} hosts x ({hd['dir_slots_per_host']} directory slots, {hd['channels_per_host']} channels), "
        f"rings of {hd['ring_bytes']} bytes, {hd['lanes_per_host']} extent lanes of {hd['lane_bytes']} bytes per host",
    ]
    co = snap["coherence"]
    model = co["model"]
    if model is None:
        lines.append(f"coherence: formatted {co['formatted']}; hardware-coherent (no model runs it)")
    else:
        seen = f"host {model['view_of_host']}'s view" if model["view_of_host"] is not None else "the device"
        lines.append(f"coherence: formatted {co['formatted']}; non-coherent model in {model['dir']} (hosts "
                     f"{', '.join(map(str, model['hosts']))}, {model['evictions_per_s']} evictions/s, seed "
                     f"{model['seed']}); this is {seen}; {model['reports']} lost-update report(s)")
        if model["last_report"]:
            lines.append(f"  last: {model['last_report']}")
    services = snap["services"]
    lines.append(f"services ({len(services)}):")
    for s in services:
        state = s["state"]
        if s.get("heartbeat_moving") is False:
            state = "live, but its heartbeat stood still (server gone?)"
        lines.append(f"  {s['name']!s:<20} host {s['host']} slot {s['slot']} gen {s['generation']} {state:<8} "
                     f"pid {s['pid']} heartbeat {s['heartbeat_age_s']} s ago; calls {s['calls']} errors {s['errors']} "
                     f"in {s['bytes_in']} B out {s['bytes_out']} B")
    channels = snap["channels"]
    lines.append(f"channels ({len(channels)}):")
    for c in channels:
        lines.append(f"  host {c['host']} slot {c['slot']} gen {c['generation']} {c['state']:<6} -> "
                     f"{c['target']['name']} ({c['server_verdict']}); client pid {c['client_pid']} heartbeat "
                     f"{c['client_heartbeat_age_s']} s ago; calls {c['calls_started']} started {c['calls_done']} done "
                     f"{c['in_flight']} in flight"
                     + (f"; backlog req {c['request_backlog']} resp {c['response_backlog']}" if c["state"] == "open" else ""))
    lanes = snap.get("lanes", [])
    if lanes:
        lines.append(f"extent lanes ({len(lanes)} ever claimed):")
        for x in lanes:
            lines.append(f"  host {x['host']} lane {x['lane']} gen {x['generation']} {x['state']:<4} pid {x['pid']} "
                         f"{x['direction']} of channel {x['channel']}; {x['bytes_written']} bytes written")
    in_flight = sum(c["in_flight"] for c in channels)
    lines.append(f"in-flight calls: {in_flight}")
    return "\n".join(lines)


def to_json(snap: Dict[str, Any]) -> str:
    return json.dumps(snap, indent=2, sort_keys=False)
