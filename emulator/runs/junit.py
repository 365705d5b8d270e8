"""JUnit XML for `run --junit`: one testcase per step, which CI systems show as tests."""

from __future__ import annotations

import socket
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional

from emulator.errors import UserError
from emulator.runs.steps import StepResult


def _text(data: bytes | bytearray) -> str:
    """Output as XML-safe text (control characters other than tab/newline removed)."""
    text = bytes(data).decode("utf-8", errors="replace")
    return "".join(ch for ch in text if ch in "\t\n\r" or ord(ch) >= 0x20)


def build_report(suite: str, results: list[StepResult], up_error: Optional[str] = None,
                 up_seconds: float = 0.0) -> ET.ElementTree:
    """A <testsuites> document; a failed `up` becomes one errored testcase named "up"."""
    root = ET.Element("testsuites")
    cases: list[ET.Element] = []
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    total = up_seconds
    if up_error is not None:
        case = ET.Element("testcase", classname=suite, name="up", time=f"{up_seconds:.3f}")
        ET.SubElement(case, "error", message=up_error).text = up_error
        cases.append(case)
        counts["tests"] += 1
        counts["errors"] += 1
    for r in results:
        case = ET.Element("testcase", classname=suite, name=r.name, time=f"{r.seconds:.3f}")
        counts["tests"] += 1
        total += r.seconds
        if r.status == "failed":
            ET.SubElement(case, "failure", message=r.message or "failed").text = r.message
            counts["failures"] += 1
        elif r.status == "error":
            ET.SubElement(case, "error", message=r.message or "error").text = r.message
            counts["errors"] += 1
        elif r.status == "skipped":
            ET.SubElement(case, "skipped", message="an earlier step failed")
            counts["skipped"] += 1
        if r.stdout:
            ET.SubElement(case, "system-out").text = _text(r.stdout)
        if r.stderr:
            ET.SubElement(case, "system-err").text = _text(r.stderr)
        cases.append(case)
    attrs = {k: str(v) for k, v in counts.items()}
    suite_el = ET.SubElement(root, "testsuite", name=suite, time=f"{total:.3f}", hostname=socket.gethostname(),
                             timestamp=time.strftime("%Y-%m-%dT%H:%M:%S"), **attrs)
    suite_el.extend(cases)
    root.attrib.update(attrs)
    return ET.ElementTree(root)


def write_report(path: Path, tree: ET.ElementTree) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ET.indent(tree)
        tree.write(path, encoding="utf-8", xml_declaration=True)
    except OSError as err:
        raise UserError(f"cannot write the JUnit report {path}: {err.strerror or err}") from None
