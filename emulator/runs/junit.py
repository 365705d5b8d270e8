"""JUnit XML for `run --junit`: one testcase per step, which CI systems show as tests, and
every test of the JUnit files the steps left in their hosts' $NOTNETS_ARTIFACTS (a
pytest --junitxml, a go test report...), each file's suites added as they are, named
after the host, so that CI shows the tests themselves and not only the step that ran them."""

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
            ET.SubElement(case, "skipped", message=r.message or "an earlier step failed")
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


COUNTS = ("tests", "failures", "errors", "skipped")


def _suites(path: Path) -> list[ET.Element]:
    """The <testsuite> elements of a JUnit file (root <testsuites> or a lone <testsuite>)."""
    root = ET.parse(path).getroot()
    if root.tag == "testsuite":
        return [root]
    if root.tag == "testsuites":
        return root.findall("testsuite")
    raise ValueError(f"root element <{root.tag}> is neither <testsuites> nor <testsuite>")


def _count(suite: ET.Element, key: str) -> int:
    value = suite.get(key)
    if value is not None and value.isdigit():
        return int(value)
    cases = suite.findall("testcase")
    if key == "tests":
        return len(cases)
    tag = {"failures": "failure", "errors": "error", "skipped": "skipped"}[key]
    return sum(1 for case in cases if case.find(tag) is not None)


def merge_reports(tree: ET.ElementTree, artifacts: Path) -> list[Path]:
    """Add the suites of every ``artifacts/HOST/**/*.xml`` to the report; a file that is
    not JUnit XML becomes one errored testcase naming it. Returns the files merged."""
    root = tree.getroot()
    merged = []
    for path in sorted(artifacts.glob("*/**/*.xml")):
        host = path.relative_to(artifacts).parts[0]
        try:
            suites = _suites(path)
        except (ET.ParseError, ValueError, OSError) as err:
            suite = ET.Element("testsuite", name=path.name, tests="1", failures="0", errors="1",
                               skipped="0")
            case = ET.SubElement(suite, "testcase", classname=host, name=path.name)
            ET.SubElement(case, "error", message=f"not a JUnit XML file: {err}").text = str(path)
            suites = [suite]
        merged.append(path)
        for suite in suites:
            suite.set("name", f"{host}: {suite.get('name') or path.stem}")
            for key in COUNTS:
                suite.set(key, str(_count(suite, key)))
                root.set(key, str(int(root.get(key, "0")) + int(suite.get(key))))
            root.append(suite)
    return merged


def write_report(path: Path, tree: ET.ElementTree) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ET.indent(tree)
        tree.write(path, encoding="utf-8", xml_declaration=True)
    except OSError as err:
        raise UserError(f"cannot write the JUnit report {path}: {err.strerror or err}") from None
