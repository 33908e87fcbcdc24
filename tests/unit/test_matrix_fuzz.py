"""Fuzz `parse_matrix` with YAML text: whatever the text, the only exception is InputError.

The text is built from matrix-shaped pieces (so that much of it gets past the YAML parser and
into the validators) decorated with what YAML allows and builder refuses or must survive:
tags, anchors, aliases, merge keys, duplicate and non-string keys, deep nesting, odd scalars,
and random cuts and splices that make syntax errors at every position.

BUILDER_FUZZ_EXAMPLES sets the number of examples (300 by default; the nightly run uses
30000: `BUILDER_FUZZ_EXAMPLES=30000 python -m pytest tests/unit/test_matrix_fuzz.py`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.errors import InputError
from builder.matrix import MAX_CELLS, parse_matrix

EXAMPLES = int(os.environ.get("BUILDER_FUZZ_EXAMPLES", "300"))

KEYS = [
    "version", "bases", "axes", "exclude", "include", "requirements", "indexes", "profiles",
    "profile_paths", "probes", "gpu", "app", "registry", "runners", "image", "python", "cuda",
    "platform", "apt", "preinstalled", "base", "cpu", "gpu", "torch", "transformers", "numpy",
    "index_url", "extra_index_urls", "wheelhouse", "ca_bundle", "url", "path", "entry_modules",
    "generate", "imports", "timeout", "memory", "model-dir", "<<", "1", "3.10", "null", "true",
    "~", "''", '"a b"', "? [a]", "Torch", "b",
]  # fmt: skip
SCALARS = [
    "1", "2", "0", "-1", "3.10", "3.١١", "12.1", "1_000", "0x1F", "0o17", "0b101", "1:30",
    "190:20:30", ".inf", "-.inf", ".nan", "1e400", "1.0e+400", "9" * 80, "~", "null", "yes",
    "no", "on", "off", "true", "=", "<<", "2024-01-01", "2001-12-14t21:59:43.10-05:00", "''",
    '""', "'it''s'", '"\\u0000"', '"\\t"', "cpu", "gpu", "b", "x", "debian:bookworm",
    "python@sha256:xyz", "a:b:c:d", "x@@sha256:", "ghcr.io/acme/serving", "Python:3",
    "'2.4.0'", "'>=4.49,<4.52'", "'==2.4.0+cu121'", "'~=1.2,!=1.3'", "'torch; python_version<\"3\"'",
    "https://pypi.org/simple", "https://u:t@h/simple", "https://[::1/", "file:///tmp",
    "linux/arm64", "required", "optional", ".", "..", "../..", "/", "/etc/passwd", "app",
    "'$(id)'", "'{{ x }}'", "'`x`'", "'a\\nb'", "é", "\u202e", "-", "'-'", "'#'", "'!'",
]  # fmt: skip
TAGS = [
    "!!str", "!!int", "!!float", "!!bool", "!!null", "!!seq", "!!map", "!!binary", "!!timestamp",
    "!!set", "!!omap", "!!merge", "!!python/object:os.system", "!foo", "!", "!<tag:x.org,1:y>",
]  # fmt: skip
ANCHORS = ["a", "b", "base"]


def _decorated(core: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A node; now and then with a tag and an anchor in front, or an alias instead (often
    enough to test them, rarely enough that most documents get to the validators)."""
    prefix = st.tuples(st.none() | st.sampled_from(TAGS), st.none() | st.sampled_from(ANCHORS))
    alias = st.sampled_from(ANCHORS).map(lambda a: f"*{a}")
    return st.tuples(st.integers(0, 9), prefix, core, alias).map(_decorate)


def _decorate(parts: tuple[int, tuple[str | None, str | None], str, str]) -> str:
    dice, (tag, anchor), core, alias = parts
    if dice < 7:
        return core
    if dice == 9:
        return alias
    return " ".join(x for x in (tag, anchor and f"&{anchor}", core) if x)


def _flow(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    key = st.sampled_from(KEYS) | _decorated(st.sampled_from(SCALARS))
    pair = st.tuples(key, children).map(lambda kv: f"{kv[0]}: {kv[1]}")
    return _decorated(
        st.one_of(
            st.lists(children, max_size=5).map(lambda xs: "[" + ", ".join(xs) + "]"),
            st.lists(pair, max_size=5).map(lambda xs: "{" + ", ".join(xs) + "}"),
        )
    )


NODES = st.recursive(_decorated(st.sampled_from(SCALARS)), _flow, max_leaves=20)
DEEP = st.integers(1, 3000).map(lambda n: "[" * n + "]" * n) | st.integers(1, 200).map(
    lambda n: "".join(f"{'  ' * i}k{i}:\n" for i in range(n))
)

SKELETON = """\
version: {version}
bases:
  cpu: {cpu}
  gpu: {{image: "nvidia/cuda:12.1.0-devel-ubuntu22.04", python: "3.10", cuda: {cuda}}}
axes:
  base: {bases}
  {axis}: {values}
{extra}
"""


# Top-level sections as a valid matrix might have them, with the odd hostile one.
SECTIONS = [
    "probes: {generate: {timeout: 5, memory: 2g, x: [1, {a: b}], when: 2024-01-01}}",
    "probes: [imports, numpy, generate]",
    "probes: {imports: null, model-dir: {model_dir: /models, n: &n 3, m: *n}}",
    "include: [{base: cpu, torch: '2.5.0'}, {numpy: '1.26.4'}, {base: gpu, diffusers: '0.35.1'}]",
    "exclude: [{base: gpu}, {torch: '2.4.0'}]",
    "requirements: ['numpy<2', 'transformers>=4.49,<4.52', 'torch; python_version>\"3\"']",
    "indexes: {index_url: 'https://pypi.org/simple', extra_index_urls: ["
    "'https://download.pytorch.org/whl/cpu', {url: 'https://x.org/cu121', cuda: ['12.1']}]}",
    "indexes: {wheelhouse: [wheels], ca_bundle: ca.pem}",
    "indexes: {index_url: 'https://user:tok@h/simple'}",
    "app: {path: app, entry_modules: [wanapp, a.b]}",
    "app: {path: ..}",
    "profiles: [wan2.1, wan2.2]",
    "profile_paths: [profiles]",
    "gpu: required",
    "registry: ghcr.io/acme/serving",
    "runners: {cpu: ubuntu-24.04, gpu: gpu-a10}",
    "bases2: &x {a: 1}",
    "<<: {gpu: none}",
]


@st.composite
def matrices(draw: st.DrawFn) -> str:
    """A matrix-shaped document: each slot is usually sensible and sometimes random, so that
    the validators see odd values in every position."""

    def slot(usual: list[str]) -> str:
        odd = NODES | st.sampled_from(SCALARS)
        return draw(st.sampled_from(usual) if draw(st.integers(0, 5)) else odd)

    section = st.sampled_from(SECTIONS) | st.tuples(
        st.sampled_from(KEYS), NODES | st.sampled_from(SCALARS)
    ).map(lambda kv: f"{kv[0]}: {kv[1]}")
    return SKELETON.format(
        version=slot(["1"]),
        cpu=slot(['{image: "debian:bookworm", python: "3.11"}']),
        cuda=slot(['"12.1"', "12.1", "null"]),
        bases=slot(["[cpu, gpu]", "[cpu]"]),
        axis=draw(st.sampled_from(["torch", "transformers", "numpy"]) | st.sampled_from(KEYS)),
        values=slot(["['2.4.0', '2.5.0']", "['>=4.49,<4.52']", "[2.4.0]", "['1.26.4', 2.0]"]),
        extra="\n".join(draw(st.lists(section, max_size=6))),
    )


@st.composite
def mangled(draw: st.DrawFn, texts: st.SearchStrategy[str]) -> str:
    """Cut, duplicate or splice a text at random places: syntax errors everywhere."""
    text = draw(texts)
    for _ in range(draw(st.integers(0, 3))):
        start = draw(st.integers(0, len(text)))
        end = draw(st.integers(start, min(len(text), start + 40)))
        insert = draw(
            st.sampled_from(
                ["", text[start:end], "\t", ":", "- ", "\n  ", "&a ", "*a", "!!int ", "<<: "]
            )
        )
        text = text[:start] + insert + text[end:]
    return text


TEXTS = st.one_of(
    matrices(),
    mangled(matrices()),
    NODES,
    DEEP,
    st.text(max_size=200),
)


@pytest.fixture(scope="module")
def matrix_path() -> Iterator[Path]:
    """A project with the directories the pieces name, so that paths can also resolve."""
    with tempfile.TemporaryDirectory() as root:
        for name in ("app", "wheels", "profiles"):
            (Path(root) / name).mkdir()
        (Path(root) / "ca.pem").write_text("")
        yield Path(root) / "matrix.yaml"


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(text=TEXTS)
def test_random_yaml_text_raises_nothing_but_input_error(matrix_path: Path, text: str) -> None:
    try:
        matrix = parse_matrix(text, matrix_path)
    except InputError as exc:
        assert exc.message and "Traceback" not in exc.message
    else:
        assert 0 < len(matrix.cells) <= 2 * MAX_CELLS
