"""The ACPI power button (QMP system_powerdown): end the guest's commands and power off.

The button is an evdev input device named "Power Button"; reading its events needs
nothing but the evdev module, so this replaces acpid. Power-off goes through
/proc/sysrq-trigger, which needs no binary from the host and works for PID 1's children.
"""

from __future__ import annotations

import glob
import os
import struct
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a noticeable import time under TCG; the agent skips it
    from typing import Callable, Optional

EVENT = struct.Struct("llHHi")  # struct input_event on 64-bit: timeval, type, code, value
EV_KEY = 1
KEY_POWER = 116
BUTTON_NAME = "Power Button"


def find_power_button(sysfs: str = "/sys/class/input", dev: str = "/dev/input") -> Optional[str]:
    for entry in sorted(glob.glob(os.path.join(sysfs, "event*"))):
        try:
            with open(os.path.join(entry, "device", "name")) as f:
                if f.read().strip() == BUTTON_NAME:
                    return os.path.join(dev, os.path.basename(entry))
        except OSError:
            continue
    return None


def wait_for_button(timeout: float, poll: float = 0.5) -> Optional[str]:
    """The button's device node, waiting for it: init loads button/evdev while the agent starts."""
    deadline = time.monotonic() + timeout
    while True:
        device = find_power_button()
        if device and os.path.exists(device):
            return device
        if time.monotonic() >= deadline:
            return None
        time.sleep(poll)


def is_power_press(event: bytes) -> bool:
    _sec, _usec, etype, code, value = EVENT.unpack(event)
    return etype == EV_KEY and code == KEY_POWER and value == 1


def watch(device: str, on_press: Callable[[], None]) -> None:
    """Block reading ``device``; call ``on_press`` at the first power-button press."""
    with open(device, "rb", buffering=0) as f:
        while True:
            event = f.read(EVENT.size)
            if len(event) < EVENT.size:
                return
            if is_power_press(event):
                on_press()
                return


def power_off() -> None:
    """Sync, then ask the kernel to power off now (sysrq 'o')."""
    os.sync()
    with open("/proc/sysrq-trigger", "w") as f:
        f.write("o")
