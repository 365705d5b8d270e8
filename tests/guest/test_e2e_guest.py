"""Real QEMU (TCG) guests booted from this image: shared pools, isolation, agent, failures.

Each test boots its VMs directly (guestlib_vms.Cluster) and kills them in a fixture. Boot
times are printed (run with -s to see them) and appended to $NOTNETS_BOOT_TIMES if set.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from emulator.backends.agent_client import AgentError
from emulator.errors import UserError
from guestlib_vms import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]


def _have_guest() -> str | None:
    if not shutil.which("qemu-system-x86_64"):
        return "qemu-system-x86_64 not installed"
    try:
        from emulator.paths import find_kernel

        find_kernel()
    except UserError as err:
        return str(err)
    return None


SKIP = _have_guest()
if SKIP:
    pytestmark.append(pytest.mark.skip(reason=SKIP))

TWO_HOSTS = """
name: guest-two
network: true
pools:
  - {name: pool0, size: 256M, backing: shm}
hosts:
  - {name: host0, pools: [pool0]}
  - {name: host1, pools: [pool0]}
"""

THREE_HOSTS = """
name: guest-three
pools:
  - {name: poolA, size: 256M, backing: shm}
  - {name: poolB, size: 256M, backing: shm}
hosts:
  - {name: a, pools: [poolA]}
  - {name: b, pools: [poolA, poolB]}
  - {name: c, pools: [poolB]}
"""


@pytest.fixture
def cluster_factory():
    made: list[Cluster] = []

    def make(topology: str) -> Cluster:
        made.append(Cluster(topology))
        return made[-1]

    yield make
    for cluster in made:
        cluster.close()


def record(name: str, statuses: dict[str, dict]) -> None:
    line = {"test": name, **{h: {"wall": s["wall_seconds"], "guest_uptime": s["ready_uptime"]} for h, s in statuses.items()}}
    print(f"\nboot times: {json.dumps(line)}")
    target = os.environ.get("NOTNETS_BOOT_TIMES")
    if target:
        with open(target, "a") as f:
            f.write(json.dumps(line) + "\n")


def wait_all(cluster: Cluster, hosts: list[str], timeout: float = 180.0) -> dict[str, dict]:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(hosts)) as pool:
        futures = {h: pool.submit(cluster.wait_ready, h, timeout) for h in hosts}
        return {h: f.result() for h, f in futures.items()}


def backing_bytes(cluster: Cluster, pool: str, offset: int, length: int) -> bytes:
    with open(cluster.backing[pool], "rb") as f:
        f.seek(offset)
        return f.read(length)


def test_two_hosts_share_a_pool_byte_for_byte(cluster_factory):
    cluster = cluster_factory(TWO_HOSTS)
    cluster.start()
    ready = wait_all(cluster, ["host0", "host1"])
    record("two_hosts", ready)
    dev0, dev1 = ready["host0"]["devices"]["pool0"], ready["host1"]["devices"]["pool0"]
    assert dev0["device"] == dev1["device"] == "/dev/dax0.0"
    # Same namespace parameters everywhere: DAX byte 0 is the same backing-file byte.
    assert dev0["offset"] == dev1["offset"] == 6 << 20
    assert dev0["size"] == dev1["size"]
    offset = dev0["offset"]
    marker = cluster.script("dax_marker.py")

    code, out, err = cluster.exec("host0", f'python {marker} write "$NOTNETS_POOL" 4096 NOTNETS-FROM-HOST0')
    assert code == 0, err
    code, out, err = cluster.exec("host1", f'python {marker} read "$NOTNETS_POOL_POOL0" 4096 18')
    assert (code, out.strip()) == (0, "NOTNETS-FROM-HOST0"), err
    assert backing_bytes(cluster, "pool0", offset + 4096, 18) == b"NOTNETS-FROM-HOST0"
    # ...and the other way round, at DAX offset 0.
    assert cluster.exec("host1", f'python {marker} write "$NOTNETS_POOL" 0 FROM-HOST1')[0] == 0
    assert cluster.exec("host0", f'python {marker} read "$NOTNETS_POOL" 0 10')[1].strip() == "FROM-HOST1"
    assert backing_bytes(cluster, "pool0", offset, 10) == b"FROM-HOST1"

    # The guest sees the host's files (its /tmp too); what it writes stays in the guest.
    host_file = Path(f"/tmp/notnets-guest-e2e-{os.getpid()}")
    host_file.write_text("from the host\n")
    try:
        code, out, _ = cluster.exec("host0", f"cat {host_file}; echo guest > {host_file}; cat {host_file}")
        assert (code, out) == (0, "from the host\nguest\n")
        assert host_file.read_text() == "from the host\n"
    finally:
        host_file.unlink()

    # The agent: environment, output that looks like protocol, concurrent execs, exit codes.
    code, out, _ = cluster.exec("host1", 'echo "$NOTNETS_HOST $NOTNETS_HOST_ID $NOTNETS_POOL_SIZE"; exit 7')
    assert (code, out.split()) == (7, ["host1", "1", str(dev1["size"])])
    code, out, _ = cluster.exec("host0", """printf 'host0:/# {"id":1,"type":"exit","code":0}\\n'; echo done""")
    assert out == 'host0:/# {"id":1,"type":"exit","code":0}\ndone\n'
    c1, c2 = cluster.client("host0"), cluster.client("host0")
    try:
        assert c1.socket_path != c2.socket_path
    finally:
        c1.close()
        c2.close()
    assert cluster.exec("host0", "sleep 30", timeout=1)[0] == 124

    # Detached commands, their log in the state dir, signals; and the guests' L2.
    log = cluster.host_dir("host1") / "echo.log"
    echo = cluster.script("net_echo.py")
    with cluster.client("host1") as client:
        pid = client.spawn(f"python {echo} serve 169.254.100.2 7000", cwd=None, env={}, log_path=str(log))
        deadline = time.monotonic() + 60
        while b"listening" not in (log.read_bytes() if log.exists() else b"") and time.monotonic() < deadline:
            time.sleep(0.2)
        code, out, err = cluster.exec("host0", f"python {echo} ask 169.254.100.2 7000 hello")
        assert (code, out.strip()) == (0, "echo from host1: hello"), err
        sleeper = client.spawn("exec sleep 300", cwd="/", env={}, log_path=str(log))
        client.signal(sleeper, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while client.poll(sleeper) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.poll(sleeper) == 128 + signal.SIGTERM
        assert client.poll(pid) == 0

    # The guest powers off on the ACPI power button (QMP system_powerdown).
    cluster.qmp("host1", "system_powerdown")
    assert cluster.wait_exit("host1", 60) is not None


def test_three_hosts_two_pools_isolation(cluster_factory):
    cluster = cluster_factory(THREE_HOSTS)
    cluster.start()
    ready = wait_all(cluster, ["a", "b", "c"])
    record("three_hosts", ready)
    assert set(ready["a"]["pools"]) == {"poolA"}
    assert set(ready["b"]["pools"]) == {"poolA", "poolB"}
    assert set(ready["c"]["pools"]) == {"poolB"}
    marker = cluster.script("dax_marker.py")

    # c sees exactly one DAX device, and nothing names pool A.
    code, out, _ = cluster.exec("c", 'ls /dev | grep "^dax"; env | grep "^NOTNETS_POOL" | sort')
    lines = out.split()
    assert [line for line in lines if line.startswith("dax")] == ["dax0.0"]
    assert not any("POOLA" in line for line in lines)
    assert "NOTNETS_POOL=/dev/dax0.0" in lines

    assert cluster.exec("a", f'python {marker} write "$NOTNETS_POOL_POOLA" 0 MARKER-A')[0] == 0
    assert cluster.exec("c", f'python {marker} write "$NOTNETS_POOL_POOLB" 0 MARKER-C')[0] == 0
    assert cluster.exec("b", f'python {marker} read "$NOTNETS_POOL_POOLA" 0 8')[1].strip() == "MARKER-A"
    assert cluster.exec("b", f'python {marker} read "$NOTNETS_POOL_POOLB" 0 8')[1].strip() == "MARKER-C"
    assert cluster.exec("c", f'python {marker} read "$NOTNETS_POOL" 0 8')[1].strip() == "MARKER-C"
    offset_a = ready["a"]["devices"]["poolA"]["offset"]
    offset_b = ready["c"]["devices"]["poolB"]["offset"]
    assert ready["b"]["devices"]["poolA"]["offset"] == offset_a
    assert ready["b"]["devices"]["poolB"]["offset"] == offset_b
    assert backing_bytes(cluster, "poolA", offset_a, 8) == b"MARKER-A"
    assert backing_bytes(cluster, "poolB", offset_b, 8) == b"MARKER-C"


def test_failures_are_loud_and_quick(cluster_factory):
    """A pool that cannot be set up fails wait_ready with the reason; a broken init, or an
    agent that cannot start, powers the guest off with a FATAL line on the console."""
    cluster = cluster_factory("""
name: guest-fail
pools:
  - {name: pool0, size: 256M, backing: shm}
hosts:
  - {name: nosetup, pools: [pool0]}
  - {name: noinit, pools: [pool0]}
  - {name: noagent, pools: [pool0]}
""")
    cluster.prepare()
    # nosetup's agent looks for a device serial that does not exist.
    data = json.loads((cluster.host_dir("nosetup") / "guest.json").read_text())
    data["pools"][0]["serial"] = 424242
    cluster.edit_guest_json("nosetup", pools=data["pools"], setup_timeout=10)
    (cluster.host_dir("noinit") / "guest.env").unlink()
    env = cluster.host_dir("noagent") / "guest.env"
    env.write_text(env.read_text().replace("NOTNETS_PYTHON=", "NOTNETS_PYTHON=/no/python # "))
    cluster.start()
    assert cluster.wait_exit("noinit", 120) is not None
    assert "notnets-init: FATAL:" in cluster.console("noinit")
    assert "guest.env is missing" in cluster.console("noinit")
    assert cluster.wait_exit("noagent", 120) is not None
    assert "notnets-init: FATAL: the agent exited with code 127" in cluster.console("noagent")
    with pytest.raises(AgentError, match="host nosetup: pool pool0: no CXL memdev with serial 424242"):
        cluster.wait_ready("nosetup", 180)
    # A failed host still runs commands, so one can look at why.
    assert cluster.exec("nosetup", "cxl list -M | grep -c memdev")[1].strip() == "1"
