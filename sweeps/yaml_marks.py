"""YAML with line marks: the 1-based line of every key and list item, so errors can say `file:line`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import SweepError


@dataclass
class Marks:
    """1-based line numbers of every key (and list item) in a YAML document, by key path ("grid", "prompt", 2)."""

    file: str
    lines: dict[tuple, int] = field(default_factory=dict)

    def line(self, path: tuple) -> int | None:
        """The line of `path`, else of its nearest marked parent."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None

    def where(self, path: tuple) -> str:
        line = self.line(path)
        return f"{self.file}:{line}" if line else self.file


def dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def _walk_marks(node: yaml.Node, path: tuple, marks: Marks, dupes: list) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                dupes.append((path + (key,), seen[key], line))
            seen[key] = line
            marks.lines[path + (key,)] = line
            _walk_marks(value_node, path + (key,), marks, dupes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            marks.lines[path + (i,)] = item.start_mark.line + 1
            _walk_marks(item, path + (i,), marks, dupes)


def load_yaml_with_marks(text: str, file: str) -> tuple[Any, Marks]:
    """The parsed document and its marks; a duplicate key (which YAML would silently drop) is a SweepError."""
    marks = Marks(file)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else file
        raise SweepError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)} (fix the syntax)") from None
    dupes: list = []
    if node is not None:
        _walk_marks(node, (), marks, dupes)
    if dupes:
        path, first, second = dupes[0]
        what = "axis" if len(path) >= 2 and path[0] in ("grid", "zip") else "key"
        raise SweepError(
            f"{file}:{second}: {what} '{dotted(path)}' is given twice (first at line {first}); "
            f"YAML would silently keep only the last one: merge the values into one list"
        )
    return data, marks
