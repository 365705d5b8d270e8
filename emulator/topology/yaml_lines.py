"""Load YAML and remember the line of every value, so errors can say where."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from emulator.errors import TopologyError

Key = tuple[Union[str, int], ...]


@dataclass
class LocatedDocument:
    """Plain Python data plus a map from a value's path to its 1-based line."""

    data: Any
    source: str
    lines: dict[Key, int] = field(default_factory=dict)

    def line_of(self, path: Key) -> int | None:
        """The line of ``path`` or of its nearest ancestor that has one."""
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path[:-1]

    def where(self, path: Key) -> str:
        """``file:line: field`` as editors and compilers print it."""
        line = self.line_of(path)
        location = f"{self.source}:{line}" if line is not None else self.source
        dotted = format_path(path)
        return f"{location}: {dotted}" if dotted else location


def format_path(path: Key) -> str:
    """``('hosts', 1, 'pools')`` -> ``hosts[1].pools``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def load(text: str, source: str = "<string>") -> LocatedDocument:
    """Parse YAML with the safe loader; syntax errors become a TopologyError with line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = err.problem or err.context or "invalid YAML"
        raise TopologyError(f"{source}{line}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as err:
        raise TopologyError(f"{source}: YAML syntax error: {err}") from None
    doc = LocatedDocument(data=None, source=source)
    if node is None:
        return doc
    doc.data = _convert(node, (), doc.lines, source)
    return doc


def load_file(path: Path) -> LocatedDocument:
    """Read and parse ``path``; an unreadable file is a one-line error, not a traceback."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TopologyError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise TopologyError(f"{path}: cannot read: {err}") from None
    return load(text, str(path))


def _convert(node: yaml.Node, path: Key, lines: dict[Key, int], source: str) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            # Keys are field names: take the text as written, so YAML 1.1 does not turn
            # the step key ``on`` into the boolean True.
            if not isinstance(key_node, yaml.ScalarNode):
                raise TopologyError(f"{source}:{key_node.start_mark.line + 1}: keys must be plain names")
            key = str(key_node.value)
            if key in result:
                raise TopologyError(
                    f"{source}:{key_node.start_mark.line + 1}: {format_path(path + (key,))}: duplicate key"
                )
            result[key] = _convert(value_node, path + (key,), lines, source)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_convert(child, path + (i,), lines, source) for i, child in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()
