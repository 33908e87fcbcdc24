"""A RUN line's shell, split into its commands by bashlex (a port of bash's own parser).

`split` returns the top-level commands in order, each with the operator before and after it
(`&&`, `||`, `;`, `|`), its words (unquoted, as bash would pass them) and its text as
written. A pipeline is one unit (its commands live and die together); `if`, `for`, `while`,
`{ ...; }`, subshells and functions are units too, kept as written. bashlex refuses some of
bash (`[[ ]]`, `case`, arithmetic): `split` then raises `Unparsed` with its reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import bashlex


class Unparsed(Exception):
    """bashlex could not parse the command line."""


@dataclass(frozen=True)
class Command:
    """One top-level command of a RUN line."""

    text: str  # as written
    words: tuple[str, ...] = ()  # a simple command's words after its assignments
    assignments: tuple[str, ...] = ()  # leading NAME=value words
    before: str | None = None  # the operator before it
    after: str | None = None  # the operator after it
    compound: bool = False  # if/for/while/braces/subshell/function: kept whole
    pipeline: tuple[tuple[str, ...], ...] = ()  # a pipeline's commands' words, in order
    redirected: bool = False  # has a redirection (`> file`)
    parameters: tuple[str, ...] = ()  # names of the $parameters it expands
    inner: tuple[tuple[str, ...], ...] = ()  # the words of every simple command inside it

    @property
    def simple(self) -> bool:
        return not self.compound and not self.pipeline


def split(line: str) -> tuple[Command, ...]:
    """The top-level commands of `line`; raises Unparsed where bashlex cannot parse it."""
    try:
        trees = bashlex.parse(line)
    except Exception as exc:  # bashlex raises ParsingError, NotImplementedError and others
        raise Unparsed(f"{type(exc).__name__}: {exc}") from None
    items: list[tuple[Any, str | None]] = []
    for tree in trees:
        items += _flatten(tree)
    commands = []
    for i, (node, before) in enumerate(items):
        after = items[i + 1][1] if i + 1 < len(items) else None
        commands.append(_command(node, line, before, after))
    return tuple(commands)


def _flatten(tree: Any) -> list[tuple[Any, str | None]]:
    """A list node's commands, each with the operator before it."""
    if tree.kind != "list":
        return [(tree, None)]
    out: list[tuple[Any, str | None]] = []
    operator: str | None = None
    for part in tree.parts:
        if part.kind == "operator":
            operator = part.op
        else:
            out.append((part, operator))
            operator = None
    return out


def _command(node: Any, line: str, before: str | None, after: str | None) -> Command:
    text = line[node.pos[0] : node.pos[1]]
    parameters = tuple(dict.fromkeys(_parameters(node)))
    inner = tuple(_inner(node))
    if node.kind == "command":
        return Command(
            text=text,
            words=tuple(p.word for p in node.parts if p.kind == "word"),
            assignments=tuple(p.word for p in node.parts if p.kind == "assignment"),
            before=before,
            after=after,
            redirected=any(p.kind == "redirect" for p in node.parts),
            parameters=parameters,
            inner=inner,
        )
    pipeline = tuple(_words(p) for p in node.parts if p.kind == "command")
    return Command(
        text=text,
        before=before,
        after=after,
        compound=node.kind != "pipeline",
        pipeline=pipeline if node.kind == "pipeline" else (),
        parameters=parameters,
        inner=inner,
    )


def _words(node: Any) -> tuple[str, ...]:
    return tuple(p.word for p in node.parts if p.kind == "word")


def _walk(node: Any) -> Iterator[Any]:
    yield node
    for child in getattr(node, "parts", None) or getattr(node, "list", None) or ():
        yield from _walk(child)
    for key in ("command", "output"):
        child = getattr(node, key, None)
        if child is not None and hasattr(child, "kind"):
            yield from _walk(child)


def _parameters(node: Any) -> Iterator[str]:
    for child in _walk(node):
        if child.kind == "parameter":
            yield str(child.value)


def _inner(node: Any) -> Iterator[tuple[str, ...]]:
    for child in _walk(node):
        if child.kind == "command":
            yield _words(child)
