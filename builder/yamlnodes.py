"""Reading user YAML (matrix.yaml, profiles) as positioned nodes, and the helpers that check them.

Plumbing below `matrix` and `profiles`. The policy, the same for every file builder reads:

- A file is plain data: strings, numbers, booleans, null, lists and mappings. A value is kept
  as its source text where a string is wanted, so `python: 3.10` stays "3.10".
- Anchors and aliases (`fixed: *base`) are read, and an alias counts as all it stands for:
  a file holds at most MAX_NODES values and nests at most MAX_DEPTH levels with its aliases
  expanded, so a "billion laughs" file is refused at once. An alias inside the value it names
  (a loop) is refused.
- Merge keys (`<<: *base`) are refused: builder reads keys from the nodes, and a merged key
  would hide where a value comes from and which one wins.
- Explicit tags are refused, except the core ones (`!!str`, `!!int`, `!!float`, `!!bool`,
  `!!null`, `!!seq`, `!!map`) on a node of their kind whose value parses as the tag says.
- Dates are not a type here: `2024-01-01` is the string "2024-01-01" (YAML 1.1 would make it
  a timestamp, which no JSON can hold); `=` is a string too.
- A file has at most MAX_CHARS characters. With the limits above, reading it and walking its
  nodes takes bounded time, memory and stack.

Every problem is located as `file:line:col: dotted.field: message` (`builder.errors.located`).
"""

from __future__ import annotations

import contextlib
import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Protocol, TypeVar

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from builder.errors import InputError, located
from builder.files import read_text

MAX_CHARS = 1024 * 1024  # real matrices and profiles are a few KiB
MAX_DEPTH = 32  # the deepest builder format nests 6 levels; probe options get the rest
MAX_NODES = 100_000  # values in a file, aliases expanded; a real matrix has a few hundred
MAX_NUMBER = 64  # characters in a number; more is no number a probe option needs

T = TypeVar("T")
CORE = "tag:yaml.org,2002:"
STR, NULL, MERGE = f"{CORE}str", f"{CORE}null", f"{CORE}merge"
_SCALAR_TAGS = {f"{CORE}{name}" for name in ("str", "int", "float", "bool", "null")}
_TAGS: dict[type[yaml.Node], set[str]] = {
    yaml.ScalarNode: _SCALAR_TAGS,
    yaml.SequenceNode: {f"{CORE}seq"},
    yaml.MappingNode: {f"{CORE}map"},
}
# What a value must look like under each core tag: the resolver's own patterns.
_PATTERNS: dict[str, re.Pattern[str]] = {
    tag: pattern for rules in Resolver.yaml_implicit_resolvers.values() for tag, pattern in rules
}
# Newlines, backticks, NULs, shell substitutions and Jinja delimiters: a value with one of
# these could change a Dockerfile line or a template, so no matrix or profile value has them.
UNSAFE = re.compile(r"[\n\r\x00`]|\$\(|\$\{|\{\{|\{%|\{#|\}\}|%\}|#\}", re.ASCII)


_KEPT = {f"{CORE}{name}" for name in ("bool", "float", "int", "merge", "null")}


class _Resolver(Resolver):
    """YAML 1.1 types less timestamps, `=` values and the documentation-only `yaml` tag."""

    yaml_implicit_resolvers = {  # noqa: RUF012 - PyYAML's own class-level table
        first: [(tag, pattern) for tag, pattern in rules if tag in _KEPT]
        for first, rules in Resolver.yaml_implicit_resolvers.items()
    }


# ---------------------------------------------------------------- problems


@dataclass
class Problems:
    """Problems found in one file, reported together, sorted by position."""

    path: Path
    hint: str | None = None  # said after the list; by default how many problems to fix
    items: list[tuple[int, int, str]] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)

    def add(
        self, at: yaml.Node | yaml.Event, where: str, message: str, hint: str | None = None
    ) -> None:
        line, column = position(at.start_mark)
        item = (line, column, located(self.path, line, column, where, message))
        if item not in self.items:
            self.items.append(item)
        if hint and hint not in self.hints:
            self.hints.append(hint)

    def raise_if_any(self) -> None:
        if self.items:
            lines = [text for _, _, text in sorted(self.items)]
            raise InputError("\n".join(lines), hint="; ".join([*self.hints, self._hint()]))

    def _hint(self) -> str:
        if self.hint:
            return self.hint
        noun = "problem" if len(self.items) == 1 else "problems"
        return f"fix the {len(self.items)} {noun} above; `builder schema` prints the format"


# ---------------------------------------------------------------- composing


class _Composer(Reader, Scanner, Parser, Composer, _Resolver):
    """PyYAML's composer, refusing what the policy above refuses while it composes. It keeps
    the dotted path of the node being composed (for messages), and each composed node's
    expanded size and height, so that an alias is charged for all it stands for."""

    def __init__(self, text: str, problems: Problems) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _Resolver.__init__(self)
        self.problems = problems
        self.where: list[str] = []
        self.count = 0  # nodes so far, an alias counting its value's nodes again
        self.measured: dict[int, tuple[int, int]] = {}  # id(node) -> (size, height)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        where = self._where(parent, index)
        if isinstance(event, yaml.AliasEvent):
            return self._alias(event, where)
        if len(self.where) >= MAX_DEPTH:
            self._fail(event, where, f"nested deeper than {MAX_DEPTH} levels")
        start = self._grow(1, event, where)
        self.where.append(where)
        try:
            node = super().compose_node(parent, index)
        finally:
            self.where.pop()
        if node is not None:
            height = 1 + max((self.measured[id(c)][1] for c in _children(node)), default=0)
            self.measured[id(node)] = (self.count - start, height)
            is_key = index is None and isinstance(parent, yaml.MappingNode)
            self._check_tag(node, getattr(event, "tag", None), where, is_key)
        return node

    def _alias(self, event: yaml.AliasEvent, where: str) -> yaml.Node:
        self.get_event()  # type: ignore[no-untyped-call]
        name = f"YAML alias *{event.anchor}"
        target = self.anchors.get(event.anchor)
        if target is None:
            self._fail(event, where, f"{name} names no anchor before it")
        if id(target) not in self.measured:
            self._fail(event, where, f"{name} is inside the value it names (a loop)")
        size, height = self.measured[id(target)]
        if len(self.where) + height > MAX_DEPTH:
            self._fail(event, where, f"{name} nests the file deeper than {MAX_DEPTH} levels")
        self._grow(size, event, where)
        return target

    def _grow(self, size: int, event: yaml.Event, where: str) -> int:
        """Count `size` more nodes, refusing the file past MAX_NODES; the count before."""
        before = self.count
        self.count += size
        if self.count > MAX_NODES:
            self._fail(
                event,
                where,
                f"the file holds more than {MAX_NODES} values (an alias counts its value "
                "again each time it is used)",
            )
        return before

    def _fail(self, event: yaml.Event, where: str, message: str) -> NoReturn:
        self.problems.add(event, where, message)
        self.problems.raise_if_any()
        raise AssertionError("unreachable: a problem was just added")

    def _where(self, parent: yaml.Node | None, index: Any) -> str:
        outer = self.where[-1] if self.where else ""
        if isinstance(index, int):
            return join(outer, index)
        if isinstance(index, yaml.ScalarNode):
            return join(outer, str(index.value))
        return outer

    def _check_tag(self, node: yaml.Node, explicit: str | None, where: str, is_key: bool) -> None:
        if node.tag == MERGE and explicit is None:
            if is_key:
                self.problems.add(node, where, "YAML merge keys (<<) are not supported")
            node.tag = STR  # `<<` as a value is just text
        if explicit in (None, "!"):
            return
        pattern = _PATTERNS.get(node.tag)
        if node.tag not in _TAGS[type(node)]:
            self.problems.add(node, where, f"YAML tag {_short(node.tag)} is not supported here")
        elif isinstance(node, yaml.ScalarNode) and pattern and not pattern.match(node.value):
            self.problems.add(node, where, f"{node.value!r} is not a valid {_short(node.tag)}")


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _short(tag: str) -> str:
    return "!!" + tag.removeprefix(CORE) if tag.startswith(CORE) else tag


def read_file(path: Path, what: str) -> str:
    """A YAML file's text (`files.read_text`), refusing first one too large to be read."""
    with contextlib.suppress(OSError):  # read_text reports what stat cannot do
        if path.stat().st_size > 4 * MAX_CHARS:  # more than MAX_CHARS in any UTF-8
            raise InputError(
                f"{path}: {what} is larger than the {MAX_CHARS} characters a file may have",
                hint="split it into several files",
            )
    return read_text(path, what)


def compose(text: str, path: Path, problems: Problems) -> yaml.Node | None:
    """The single document in `text` as nodes (None when empty), checked against the policy
    in the module docstring. Raises InputError for a syntax error or any refused feature."""
    if len(text) > MAX_CHARS:
        raise InputError(
            f"{path}: {len(text)} characters is more than the {MAX_CHARS} a file may have",
            hint="split it into several files",
        )
    composer = None
    try:
        composer = _Composer(text, problems)  # the reader checks the characters here
        node = composer.get_single_node()
    except yaml.MarkedYAMLError as exc:
        line, col = position(exc.problem_mark or exc.context_mark)
        raise InputError(
            located(path, line, col, "", f"YAML syntax error: {exc.problem}"), hint=problems.hint
        ) from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: YAML error: {exc}", hint=problems.hint) from None
    finally:
        if composer is not None:
            composer.dispose()
    problems.raise_if_any()
    return node


# ---------------------------------------------------------------- reading nodes


class _Mark(Protocol):  # PyYAML's pure-Python and C marks alike
    line: int
    column: int


def position(mark: _Mark | None) -> tuple[int, int]:
    """A mark's 1-based (line, column); (1, 1) when there is none."""
    return (mark.line + 1, mark.column + 1) if mark else (1, 1)


def marks(node: yaml.Node) -> tuple[tuple[str, int, int], ...]:
    """(text, line, column) of each scalar in a list node, kept for messages after loading."""
    items = node.value if isinstance(node, yaml.SequenceNode) else []
    return tuple(
        (str(n.value), *position(n.start_mark)) for n in items if isinstance(n, yaml.ScalarNode)
    )


def join(where: str, key: str | int) -> str:
    """The dotted path of a child: `a.b`, `a[0]`."""
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


def mapping(
    node: yaml.Node, where: str, problems: Problems, allowed: Sequence[str] | None = None
) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    """A mapping node as {key: (key node, value node)}, reporting duplicates and unknown keys."""
    if not isinstance(node, yaml.MappingNode):
        problems.add(node, where or "(document)", f"expected a mapping, got {kind(node)}")
        return {}
    out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for key_node, value_node in node.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        if not isinstance(key, str) or key == "":
            problems.add(key_node, where or "(document)", "keys must be non-empty strings")
        elif key in out:
            problems.add(key_node, join(where, key), "duplicate key")
        elif allowed is not None and key not in allowed:
            problems.add(key_node, join(where, key), f"unknown key{suggest(key, allowed)}")
        else:
            out[key] = (key_node, value_node)
    return out


def suggest(word: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for a close choice, else ""."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def kind(node: yaml.Node) -> str:
    """What a node is, for messages: `a list`, `null`, `int '3'`."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if node.tag == NULL:
        return "null"
    return f"{node.tag.rsplit(':', 1)[-1]} {node.value!r}"


def is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == NULL


def scalar(
    node: yaml.Node,
    where: str,
    problems: Problems,
    pattern: re.Pattern[str] | None = None,
    what: str = "",
) -> str | None:
    """A scalar's source text (so 3.10 stays "3.10"), checked for unsafe characters."""
    if not isinstance(node, yaml.ScalarNode) or is_null(node) or node.tag.endswith(":bool"):
        problems.add(node, where, f"expected a string, got {kind(node)}")
        return None
    text = str(node.value)
    if UNSAFE.search(text):
        problems.add(
            node,
            where,
            f"unsafe value {text!r}: newlines, backticks, $( ${{ and "
            "Jinja delimiters are not allowed",
        )
        return None
    if pattern is not None and not pattern.match(text):
        problems.add(node, where, f"invalid {what or 'value'} {text!r}")
        return None
    return text


def optional(
    fields: Mapping[str, tuple[yaml.Node, yaml.Node]],
    key: str,
    where: str,
    problems: Problems,
    read: Callable[..., T],
    *args: Any,
) -> T | None:
    """`read(value, where.key, problems, *args)` for a key that may be absent (then None)."""
    if key not in fields:
        return None
    return read(fields[key][1], join(where, key), problems, *args)


def choice(
    node: yaml.Node, where: str, problems: Problems, choices: Sequence[str], what: str = ""
) -> str | None:
    """A scalar that must be one of `choices` (with a did-you-mean), or None (reported)."""
    value = scalar(node, where, problems)
    if value is None or value in choices:
        return value
    close = suggest(value, choices)
    message = f"unsupported {what} {value!r}" if what else f"expected one of {', '.join(choices)}"
    problems.add(node, where, message + close)
    return None


def boolean(node: yaml.Node, where: str, problems: Problems) -> bool | None:
    """A YAML boolean (`true` or `false`), or None (reported)."""
    if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":bool"):
        return bool(SafeConstructor().construct_yaml_bool(node))
    problems.add(node, where, f"expected true or false, got {kind(node)}")
    return None


def sequence(node: yaml.Node, where: str, problems: Problems) -> list[yaml.Node]:
    if not isinstance(node, yaml.SequenceNode):
        problems.add(node, where, f"expected a list, got {kind(node)}")
        return []
    return list(node.value)


def strings(
    node: yaml.Node,
    where: str,
    problems: Problems,
    pattern: re.Pattern[str] | None = None,
    what: str = "",
) -> tuple[str, ...]:
    """A list of scalars, each checked like `scalar`; the bad ones reported and left out."""
    items = (
        scalar(n, join(where, i), problems, pattern, what)
        for i, n in enumerate(sequence(node, where, problems))
    )
    return tuple(s for s in items if s is not None)


def plain(node: yaml.Node, where: str, problems: Problems) -> Any:
    """A node as JSON-able data: dicts with string keys, lists, str, int, finite float, bool
    and None. Its size and depth are bounded because `compose` bounds the file's with its
    aliases expanded (and refuses alias loops). A bad value is reported and becomes None."""
    if isinstance(node, yaml.MappingNode):
        fields = mapping(node, where, problems)
        return {key: plain(value, join(where, key), problems) for key, (_, value) in fields.items()}
    if isinstance(node, yaml.SequenceNode):
        return [plain(item, join(where, i), problems) for i, item in enumerate(node.value)]
    assert isinstance(node, yaml.ScalarNode)
    return _plain_scalar(node, where, problems)


def _plain_scalar(node: yaml.ScalarNode, where: str, problems: Problems) -> Any:
    name = node.tag.removeprefix(CORE)
    if name == "null":
        return None
    if name not in ("bool", "int", "float"):
        return str(node.value)
    if name != "bool" and len(node.value) > MAX_NUMBER:
        problems.add(node, where, f"a number of more than {MAX_NUMBER} characters")
        return None
    try:
        value = getattr(SafeConstructor(), f"construct_yaml_{name}")(node)
    except (ValueError, OverflowError):
        value = math.nan
    if isinstance(value, float) and not math.isfinite(value):
        problems.add(node, where, f"expected a finite number, got {node.value!r}")
        return None
    return value
