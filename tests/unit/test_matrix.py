"""matrix.yaml: loading, cell expansion with GitHub Actions semantics, and precise errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.errors import InputError
from builder.matrix import Pin, cell_id, parse_matrix, select_cells
from tests.conftest import FIXTURES, ROOT, run_cli

BAD = sorted((FIXTURES / "bad").glob("*.yaml"))

BASES = """\
version: 1
bases:
  cpu: {image: debian:bookworm, python: "3.11"}
  gpu: {image: nvidia/cuda:12.1.0-devel-ubuntu22.04, python: "3.10", cuda: "12.1"}
"""


def load(text: str, tmp_path: Path | None = None):
    return parse_matrix(text, (tmp_path or Path(".")) / "matrix.yaml")


def ids(text: str) -> list[str]:
    return [c.id for c in load(text).cells]


def axes_of(text: str) -> list[dict[str, str]]:
    return [dict(c.axes) for c in load(text).cells]


def test_the_root_matrix_loads_and_expands_to_sixteen_cells() -> None:
    matrix = parse_matrix((ROOT / "matrix.yaml").read_text(), ROOT / "matrix.yaml")
    assert len(matrix.cells) == 16
    assert (
        matrix.cells[0].id == "runpod-cu118-py310.torch-2.4.1.transformers-4.47.0.diffusers-0.31.0"
    )


def test_scalars_keep_their_source_text_so_python_3_10_is_not_3_1() -> None:
    matrix = load(
        "version: 1\nbases:\n  b: {image: x, python: 3.10, cuda: 12.10}\naxes: {base: [b]}\n"
    )
    assert (matrix.bases[0].python, matrix.bases[0].cuda) == ("3.10", "12.10")


def test_a_bare_version_pins_with_double_equals_and_a_specifier_is_kept() -> None:
    cell = load(
        BASES + "axes:\n  base: [cpu]\n  transformers: ['>=4.49, <4.52']\n  torch: [2.4.0]\n"
    ).cells[0]
    assert [p.requirement for p in cell.pins] == ["transformers>=4.49,<4.52", "torch==2.4.0"]
    assert cell.id == "cpu.transformers-ge4.49-lt4.52.torch-2.4.0"


def test_cell_ids_are_safe_as_tags_and_file_names() -> None:
    assert (
        cell_id("cu121", [Pin(name="Torch", specifier="==2.4.0+cu121")])
        == "cu121.torch-2.4.0_cu121"
    )
    assert re.fullmatch(r"[a-z0-9_.-]+", cell_id("b", [Pin(name="x", specifier="~=1.2,!=1.3")]))


def test_extra_index_urls_are_chosen_by_the_cells_cuda() -> None:
    text = (
        BASES
        + """axes: {base: [cpu, gpu]}
indexes:
  extra_index_urls:
    - https://example.org/simple
    - {url: "https://download.pytorch.org/whl/cu121", cuda: "12.1"}
    - {url: "https://download.pytorch.org/whl/cpu", cuda: null}
"""
    )
    cpu, gpu = load(text).cells
    assert cpu.indexes.extra_index_urls == (
        "https://example.org/simple",
        "https://download.pytorch.org/whl/cpu",
    )
    assert gpu.indexes.extra_index_urls == (
        "https://example.org/simple",
        "https://download.pytorch.org/whl/cu121",
    )


def test_a_cells_indexes_become_pip_options_with_wheelhouses_where_the_resolver_sees_them(
    tmp_path: Path,
) -> None:
    (tmp_path / "wheels").mkdir()
    text = BASES + (
        "axes: {base: [cpu]}\nindexes:\n  index_url: https://example.org/simple\n"
        "  extra_index_urls: [https://example.org/extra]\n  wheelhouse: [wheels]\n"
    )
    indexes = load(text, tmp_path).cells[0].indexes
    urls = ["--index-url", "https://example.org/simple", "--extra-index-url"]
    urls.append("https://example.org/extra")
    assert indexes.pip_args() == [*urls, "--find-links", str((tmp_path / "wheels").resolve())]
    assert indexes.pip_args(["/wheelhouse/0"]) == [*urls, "--find-links", "/wheelhouse/0"]


# GitHub Actions include/exclude rules, case by case (docs: "Expanding or adding matrix configurations").


def test_exclude_removes_every_combination_it_partially_matches() -> None:
    text = (
        BASES
        + "axes:\n  base: [cpu, gpu]\n  torch: ['2.4.0', '2.5.0']\nexclude:\n  - {torch: '2.5.0'}\n"
    )
    assert ids(text) == ["cpu.torch-2.4.0", "gpu.torch-2.4.0"]


def test_exclude_needs_all_its_keys_to_match() -> None:
    text = (
        BASES
        + "axes:\n  base: [cpu, gpu]\n  torch: ['2.4.0', '2.5.0']\nexclude:\n  - {base: gpu, torch: '2.5.0'}\n"
    )
    assert ids(text) == ["cpu.torch-2.4.0", "cpu.torch-2.5.0", "gpu.torch-2.4.0"]


def test_include_adds_a_new_key_to_every_matching_combination() -> None:
    text = (
        BASES
        + "axes:\n  base: [cpu, gpu]\n  torch: ['2.4.0']\ninclude:\n  - {base: gpu, diffusers: '0.35.1'}\n"
    )
    assert axes_of(text) == [
        {"base": "cpu", "torch": "2.4.0"},
        {"base": "gpu", "torch": "2.4.0", "diffusers": "0.35.1"},
    ]


def test_include_with_only_new_keys_extends_every_combination() -> None:
    text = BASES + "axes:\n  base: [cpu, gpu]\ninclude:\n  - {numpy: '1.26.4'}\n"
    assert [a.get("numpy") for a in axes_of(text)] == ["1.26.4", "1.26.4"]


def test_include_never_overwrites_an_original_value_it_becomes_a_new_cell() -> None:
    text = (
        BASES
        + "axes:\n  base: [cpu]\n  torch: ['2.4.0']\ninclude:\n  - {base: cpu, torch: '2.5.0'}\n"
    )
    assert ids(text) == ["cpu.torch-2.4.0", "cpu.torch-2.5.0"]


def test_a_later_include_may_overwrite_a_value_added_by_an_earlier_one() -> None:
    text = (
        BASES
        + """axes:\n  base: [cpu, gpu]
include:
  - {diffusers: '0.31.0'}
  - {base: gpu, diffusers: '0.35.1'}
"""
    )
    assert [a["diffusers"] for a in axes_of(text)] == ["0.31.0", "0.35.1"]


def test_include_is_matched_against_original_values_not_added_ones() -> None:
    # GitHub's own example: {color: green} is added everywhere, then an entry keyed on an added
    # key that matches no original axis value adds a new combination.
    text = (
        BASES
        + """axes:\n  base: [cpu]
  torch: ['2.4.0']
include:
  - {diffusers: '0.31.0'}
  - {base: gpu, torch: '2.5.0'}
"""
    )
    assert axes_of(text) == [
        {"base": "cpu", "torch": "2.4.0", "diffusers": "0.31.0"},
        {"base": "gpu", "torch": "2.5.0"},
    ]


def test_exclude_runs_before_include_so_include_can_re_add_a_cell() -> None:
    text = (
        BASES
        + """axes:\n  base: [cpu, gpu]
exclude:\n  - {base: gpu}
include:\n  - {base: gpu, torch: '2.5.0'}
"""
    )
    assert ids(text) == ["cpu", "gpu.torch-2.5.0"]


def test_select_cells_accepts_ids_and_globs_and_rejects_unknown_ones() -> None:
    matrix = load(BASES + "axes:\n  base: [cpu, gpu]\n  torch: ['2.4.0', '2.5.0']\n")
    assert [c.id for c in select_cells(matrix, ["gpu.*"])] == ["gpu.torch-2.4.0", "gpu.torch-2.5.0"]
    assert [c.id for c in select_cells(matrix, ["cpu.torch-2.5.0"])] == ["cpu.torch-2.5.0"]
    with pytest.raises(InputError, match="matches no cell"):
        select_cells(matrix, ["cuda.*"])


# Malformed files: exit 2, the right line and field, no traceback.


def test_there_are_at_least_thirty_malformed_fixtures() -> None:
    assert len(BAD) >= 30


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_a_malformed_matrix_is_rejected_with_its_line_and_field(path: Path) -> None:
    where, fragment = re.match(
        r"# expect: (\S*) \| (.*)", path.read_text().splitlines()[0]
    ).groups()
    with pytest.raises(InputError) as caught:
        parse_matrix(path.read_text(), path)
    message = caught.value.message
    assert fragment in message
    if where:
        assert f"{path}:{where}: " in message


@pytest.mark.parametrize("path", BAD[:5], ids=[p.stem for p in BAD[:5]])
def test_the_cli_exits_2_without_a_traceback(path: Path) -> None:
    result = run_cli("matrix", "-m", str(path))
    assert result.code == 2
    assert "Traceback" not in result.err and "error:" in result.err
    assert result.out == ""


def test_a_missing_matrix_file_is_exit_2(tmp_path: Path) -> None:
    result = run_cli("matrix", "-m", str(tmp_path / "nope.yaml"))
    assert (result.code, "matrix file not found" in result.err) == (2, True)


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "version",
                    "bases",
                    "axes",
                    "image",
                    "python",
                    "cpu",
                    "base",
                    "torch",
                    "include",
                    "exclude",
                    "cuda",
                    "probes",
                    "indexes",
                    "app",
                    "requirements",
                    "gpu",
                ]
            )
            | st.text(max_size=6),
            children,
            max_size=5,
        )
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(yaml_values)
def test_random_yaml_documents_never_crash_the_loader(document: object) -> None:
    text = yaml.safe_dump(document)
    try:
        parse_matrix(text, Path("random.yaml"))
    except InputError as exc:
        assert exc.message
