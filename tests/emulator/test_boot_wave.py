"""Hosts booting in waves (NOTNETS_BOOT_WAVE): at most N boot at once, the next starts
as one turns ready. Driven with fake VMs: the agent's readiness is an event per host."""

from __future__ import annotations

import threading

import pytest

from emulator.backends.qemu import backend as qemu_backend
from emulator.backends.qemu.backend import QemuBackend, boot_wave
from emulator.errors import UserError
from emulator.progress import Progress
from emulator.runs.state import HostState, RunState

pytestmark = pytest.mark.timeout(60)


class FakeVM:
    def __init__(self) -> None:
        self.pid = 4242

    def poll(self):
        return None


def _run(tmp_path, n: int) -> RunState:
    run = RunState(name="w", backend="qemu", state_dir=str(tmp_path), accel="tcg")
    run.hosts = [HostState(name=f"h{i}", index=i, dir=str(tmp_path), console_log=str(tmp_path / f"h{i}.log"))
                 for i in range(n)]
    return run


@pytest.mark.parametrize("wave", [1, 2, 0])
def test_no_more_than_a_wave_boots_at_once(tmp_path, monkeypatch, wave):
    run = _run(tmp_path, 5)
    ready = {hs.name: threading.Event() for hs in run.hosts}
    launched: list[str] = []
    booting: set[str] = set()
    most = [0]
    lock = threading.Lock()

    def fake_wait_agent(agent, hs, proc, deadline):
        ready[hs.name].wait(30)
        with lock:
            booting.discard(hs.name)
        return {"pools": {}}

    def launch(hs):
        with lock:
            launched.append(hs.name)
            booting.add(hs.name)
            most[0] = max(most[0], len(booting))
        hs.pid = 4242
        threading.Timer(0.05, ready[hs.name].set).start()  # each VM turns ready a moment after its start
        return FakeVM()

    monkeypatch.setattr(QemuBackend, "_wait_agent", staticmethod(fake_wait_agent))
    monkeypatch.setattr(qemu_backend.qemu_process, "cpu_seconds", lambda pid: 1.5)
    monkeypatch.setattr(RunState, "save", lambda self: None)
    QemuBackend()._wait_ready(run, run.hosts, {hs.name: set() for hs in run.hosts}, {}, 0.0, 30.0, Progress(),
                              launch=launch, wave=wave)
    assert launched == [f"h{i}" for i in range(5)]
    assert [hs.state for hs in run.hosts] == ["ready"] * 5
    assert most[0] == (wave or 5)
    assert [hs.boot_cpu_seconds for hs in run.hosts] == [1.5] * 5


def test_boot_wave_from_the_environment(monkeypatch):
    monkeypatch.delenv("NOTNETS_BOOT_WAVE", raising=False)
    assert boot_wave(16) == 0
    monkeypatch.setenv("NOTNETS_BOOT_WAVE", "4")
    assert boot_wave(16) == 4 and boot_wave(2) == 2
    for bad in ("-1", "two"):
        monkeypatch.setenv("NOTNETS_BOOT_WAVE", bad)
        with pytest.raises(UserError, match=f"NOTNETS_BOOT_WAVE='{bad}': expected how many hosts boot at once"):
            boot_wave(16)
