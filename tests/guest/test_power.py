"""The power-button watcher, without a VM."""

from pathlib import Path

from guest import power


def event(etype: int, code: int, value: int) -> bytes:
    return power.EVENT.pack(0, 0, etype, code, value)


def test_only_a_power_key_press_counts():
    assert power.is_power_press(event(power.EV_KEY, power.KEY_POWER, 1))
    assert not power.is_power_press(event(power.EV_KEY, power.KEY_POWER, 0))  # release
    assert not power.is_power_press(event(power.EV_KEY, 30, 1))
    assert not power.is_power_press(event(0, 0, 0))


def test_watch_fires_once_on_press(tmp_path: Path):
    device = tmp_path / "event1"
    device.write_bytes(event(0, 0, 0) + event(power.EV_KEY, power.KEY_POWER, 1) + event(power.EV_KEY, power.KEY_POWER, 1))
    pressed = []
    power.watch(str(device), lambda: pressed.append(1))
    assert pressed == [1]


def test_find_power_button_by_name(tmp_path: Path):
    for name, label in (("event0", "AT Translated Set 2 keyboard"), ("event1", "Power Button")):
        (tmp_path / "sys" / name / "device").mkdir(parents=True)
        (tmp_path / "sys" / name / "device" / "name").write_text(label + "\n")
    assert power.find_power_button(str(tmp_path / "sys"), "/dev/input") == "/dev/input/event1"
    assert power.find_power_button(str(tmp_path / "none"), "/dev/input") is None
