"""Guest kernel faults in console logs: found, counted, named with their host and log."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from emulator.runs.kernel_faults import describe, kernel_faults, run_kernel_faults

# Shaped like what a QEMU guest printed when FUTEX_WAIT on a device-dax page oopsed.
OOPS = b"""[   13.50] agent: ready
[   27.175427] BUG: unable to handle page fault for address: 00000000ffffffff
[   27.176510] #PF: supervisor read access in kernel mode
[   27.178496] Oops: 0000 [#1] PREEMPT SMP NOPTI
[   27.180246] RIP: 0010:free_zone_device_page+0x12/0x140
[   27.197732] note: python[161] exited with irqs disabled
"""


class FakeBackend:
    def console_log(self, run: object, host: SimpleNamespace) -> Path:
        return Path(host.console_log)


def fake_run(tmp_path: Path, logs: dict[str, bytes]) -> SimpleNamespace:
    hosts = []
    for name, text in logs.items():
        path = tmp_path / f"{name}.log"
        path.write_bytes(text)
        hosts.append(SimpleNamespace(name=name, console_log=str(path)))
    return SimpleNamespace(backend="qemu", hosts=hosts, host=lambda n: next(h for h in hosts if h.name == n))


def test_an_oops_is_found(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_bytes(OOPS)
    assert kernel_faults(log) == ["BUG: unable to handle page fault for address: 00000000ffffffff",
                                  "Oops: 0000 [#1] PREEMPT SMP NOPTI"]


def test_a_clean_boot_and_a_missing_log_have_none(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_bytes(b"notnets-init: [8.05] late modules loaded\nhost0:/# \n")
    assert kernel_faults(log) == []
    assert kernel_faults(tmp_path / "absent.log") == []


def test_only_faulty_hosts_are_named(tmp_path: Path) -> None:
    run = fake_run(tmp_path, {"host0": b"clean\n", "host2": OOPS})
    faults = run_kernel_faults(run, FakeBackend())
    assert list(faults) == ["host2"]
    (line,) = describe(run, FakeBackend(), faults)
    assert line.startswith("host2: guest kernel fault: BUG: unable to handle page fault")
    assert "(+1 more)" in line and line.endswith(str(tmp_path / "host2.log"))


def test_sim_hosts_have_no_kernel_of_their_own(tmp_path: Path) -> None:
    run = fake_run(tmp_path, {"host0": OOPS})
    run.backend = "sim"
    assert run_kernel_faults(run, FakeBackend()) == {}
