"""--accel: auto probes KVM (cached per boot) and falls back to TCG, saying which."""

from emulator.backends.qemu import accel
from emulator.paths import Kernel


def test_auto_falls_back_to_tcg_and_says_why():
    chosen, note = accel.choose_accel("auto", kernel=None, probe=lambda k: (False, "guest hung"))
    assert chosen == "tcg" and "tcg" in note and "guest hung" in note


def test_auto_uses_kvm_when_the_probe_boots():
    assert accel.choose_accel("auto", None, probe=lambda k: (True, "ok"))[0] == "kvm"


def test_explicit_choices_are_not_probed():
    def boom(k):
        raise AssertionError("probed")
    assert accel.choose_accel("tcg", None, probe=boom)[0] == "tcg"
    assert accel.choose_accel("kvm", None, probe=boom)[0] == "kvm"


def test_probe_verdict_is_cached_per_boot(tmp_path, monkeypatch):
    monkeypatch.setenv("NOTNETS_CACHE", str(tmp_path))
    monkeypatch.setattr(accel.os.path, "exists", lambda p: True)
    calls = []

    def boot(kernel, timeout):
        calls.append(timeout)
        return False, "hung"

    kernel = Kernel(tmp_path / "vmlinuz", tmp_path, "v")
    assert accel.probe_kvm(kernel, boot=boot) == (False, "hung")
    ok, reason = accel.probe_kvm(kernel, boot=boot)
    assert (ok, len(calls)) == (False, 1) and "cached" in reason
    assert list((tmp_path / "accel").glob("kvm-*.json"))
