"""Hostile or odd matrix input: YAML features, image references, URLs, sizes and long ids.

Each case is a bug a filer reproduced; the malformed files live in tests/fixtures/bad (their
first line says where the error is and what it says) and also run through the CLI here.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from builder.errors import InputError
from builder.matrix import MAX_CELLS, MAX_ID, Pin, cell_id, load_matrix, parse_matrix
from builder.yamlnodes import MAX_CHARS, MAX_DEPTH
from tests.conftest import FIXTURES, run_cli

BAD = FIXTURES / "bad"
HOSTILE = [
    "probe_alias_bomb",
    "probe_alias_loop",
    "probe_merge_key",
    "probe_unknown_tag",
    "probe_bad_float_tag",
    "probe_infinite_timeout",
    "python_tag_object",
    "image_digest_bad",
    "image_many_colons",
    "image_double_at",
    "registry_with_tag",
    "python_unicode_digits",
    "cuda_unicode_digits",
    "index_url_credentials",
    "extra_index_url_credentials",
    "app_path_outside",
    "app_path_root",
    "too_many_cells",
]
HEAD = """\
version: 1
bases:
  cpu: {image: "debian:bookworm", python: "3.11"}
axes: {base: [cpu]}
"""


def load(text: str, tmp_path: Path) -> object:
    return parse_matrix(text, tmp_path / "matrix.yaml")


def options(text: str, tmp_path: Path) -> dict[str, object]:
    cell = parse_matrix(HEAD + text, tmp_path / "matrix.yaml").cells[0]
    return dict(dict(cell.probes)["generate"])


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_matrix_exits_2_naming_file_line_and_field_and_writes_nothing(
    name: str, tmp_path: Path
) -> None:
    path = BAD / f"{name}.yaml"
    where, fragment = re.match(r"# expect: (\S+) \| (.*)", path.read_text()).groups()  # type: ignore[union-attr]
    started = time.monotonic()
    result = run_cli("render", "-m", str(path), "-o", str(tmp_path / "out"))
    assert (result.code, result.out) == (2, "")
    assert f"{path}:{where}: " in result.err and fragment in result.err
    assert "Traceback" not in result.err
    assert not (tmp_path / "out").exists()
    assert time.monotonic() - started < 30  # the alias bomb took 50 s and 2.5 GB


# YAML: anchors, aliases, merge keys, tags and dates (policy in builder/yamlnodes.py).


def test_an_alias_bomb_in_probe_options_is_refused_without_expanding_it(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(InputError, match=r"more than 100000 values"):
        load_matrix(BAD / "probe_alias_bomb.yaml")
    assert time.monotonic() - started < 5


def test_an_alias_that_contains_itself_is_refused_not_a_recursion_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"probes\.generate\.x\[0\]: YAML alias \*a is inside"):
        options("probes:\n  generate: {x: &a [*a]}\n", tmp_path)


def test_an_alias_deeper_than_the_nesting_limit_is_refused(tmp_path: Path) -> None:
    deep = "[" * (MAX_DEPTH - 4) + "1" + "]" * (MAX_DEPTH - 4)
    text = f"probes:\n  generate:\n    a: &a {deep}\n    b: [[[[[[*a]]]]]]\n"
    with pytest.raises(InputError, match=r"YAML alias \*a nests the file deeper than"):
        options(text, tmp_path)


def test_a_plain_alias_of_a_base_is_read_as_its_value(tmp_path: Path) -> None:
    text = (
        "version: 1\nbases:\n  seed: &base {image: ubuntu, python: '3.10'}\n  fixed: *base\n"
        "axes: {base: [seed, fixed]}\n"
    )
    matrix = parse_matrix(text, tmp_path / "matrix.yaml")
    assert [(b.name, b.image) for b in matrix.bases] == [("seed", "ubuntu"), ("fixed", "ubuntu")]


def test_an_undefined_alias_is_a_located_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"matrix\.yaml:6:17: probes\.generate\.x: .*no anchor"):
        options("probes:\n  generate: {x: *nowhere}\n", tmp_path)


def test_a_non_string_key_in_probe_options_becomes_its_text_not_an_internal_error(
    tmp_path: Path,
) -> None:
    assert options("probes:\n  generate: {1: x, true: 2}\n", tmp_path) == {"1": "x", "true": 2}


def test_a_date_in_probe_options_stays_a_string_so_the_options_are_json(tmp_path: Path) -> None:
    found = options(
        "probes:\n  generate: {since: 2024-01-01, at: 2001-12-14t21:59:43Z}\n", tmp_path
    )
    assert found == {"since": "2024-01-01", "at": "2001-12-14t21:59:43Z"}
    assert json.loads(json.dumps(found)) == found


def test_probe_options_keep_numbers_bools_null_lists_and_mappings(tmp_path: Path) -> None:
    text = "probes:\n  generate: {timeout: 1_800, n: 0x10, f: 1.5, on: yes, z: ~, l: [a, {b: 2}]}\n"
    assert options(text, tmp_path) == {
        "timeout": 1800,
        "n": 16,
        "f": 1.5,
        "on": True,
        "z": None,
        "l": ("a", {"b": 2}),
    }


def test_core_tags_that_parse_are_kept_and_a_str_tag_keeps_the_text(tmp_path: Path) -> None:
    text = 'probes:\n  generate: {a: !!str 3.10, b: !!int "7", c: !!float "2.5", d: !!null ""}\n'
    assert options(text, tmp_path) == {"a": "3.10", "b": 7, "c": 2.5, "d": None}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("!!int abc", "'abc' is not a valid !!int"),
        ("!!bool maybe", "'maybe' is not a valid !!bool"),
        ("!!binary aGk=", "YAML tag !!binary is not supported"),
        ("!!timestamp 2024-01-01", "YAML tag !!timestamp is not supported"),
        ("!!map [a]", "YAML tag !!map is not supported"),
        ("!!set {a: null}", "YAML tag !!set is not supported"),
        ("!<tag:example.com,2024:x> y", "YAML tag tag:example.com,2024:x is not supported"),
    ],
)
def test_an_unsupported_or_unparsable_tag_is_a_located_error(
    value: str, message: str, tmp_path: Path
) -> None:
    with pytest.raises(InputError) as caught:
        options(f"probes:\n  generate: {{x: {value}}}\n", tmp_path)
    assert f"matrix.yaml:6:17: probes.generate.x: {message}" in caught.value.message


def test_a_number_too_long_for_a_probe_option_is_refused_not_a_value_error(
    tmp_path: Path,
) -> None:
    with pytest.raises(InputError, match=r"probes\.generate\.n: a number of more than"):
        options(f"probes:\n  generate: {{n: {'9' * 5000}}}\n", tmp_path)


def test_deep_nesting_is_an_input_error_not_a_recursion_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=rf"nested deeper than {MAX_DEPTH} levels"):
        load("[" * 10_000 + "]" * 10_000, tmp_path)


def test_a_huge_text_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="characters is more than"):
        load("# " + "x" * MAX_CHARS, tmp_path)


def test_a_huge_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "matrix.yaml"
    with path.open("wb") as handle:
        handle.truncate(4 * MAX_CHARS + 1)  # sparse: no disk used
    result = run_cli("matrix", "-m", str(path))
    assert result.code == 2 and "larger than" in result.err and "Traceback" not in result.err


# Values that reach a Dockerfile or a tag.


@pytest.mark.parametrize(
    "image",
    [
        "python:3.11-slim",
        "ghcr.io/acme/serving:1.0",
        "localhost:5000/team/img@sha256:" + "a" * 64,
        "nvidia/cuda:12.1.0-devel-ubuntu22.04@sha256:" + "0" * 64,
    ],
)
def test_a_valid_image_reference_is_accepted(image: str, tmp_path: Path) -> None:
    text = (
        f"version: 1\nbases:\n  cpu: {{image: '{image}', python: '3.11'}}\naxes: {{base: [cpu]}}\n"
    )
    assert parse_matrix(text, tmp_path / "matrix.yaml").bases[0].image == image


@pytest.mark.parametrize(
    "image", ["Python:3.11", "python:3.١١", "python:", "python@sha256:" + "a" * 63]
)
def test_an_image_reference_outside_distributions_grammar_is_refused(
    image: str, tmp_path: Path
) -> None:
    text = (
        f"version: 1\nbases:\n  cpu: {{image: '{image}', python: '3.11'}}\naxes: {{base: [cpu]}}\n"
    )
    with pytest.raises(InputError, match=r"bases\.cpu\.image: invalid image reference"):
        parse_matrix(text, tmp_path / "matrix.yaml")


def test_credentials_in_an_index_url_are_refused_with_a_hint_to_use_a_netrc(
    tmp_path: Path,
) -> None:
    with pytest.raises(InputError) as caught:
        load_matrix(BAD / "index_url_credentials.yaml")
    assert "token" not in caught.value.message.split("index_url:", 1)[1]
    assert "BUILDER_NETRC" in (caught.value.hint or "")


@pytest.mark.parametrize(
    "url", ["https://h/$HOME/simple", "https://h/simple?a=1&b=2", "https:///simple", "https://h:x/"]
)
def test_an_index_url_a_shell_would_read_or_without_a_host_is_refused(
    url: str, tmp_path: Path
) -> None:
    with pytest.raises(InputError, match=r"indexes\.index_url: invalid URL"):
        load(HEAD + f"indexes: {{index_url: '{url}'}}\n", tmp_path)


def test_an_app_path_that_is_a_symlink_out_of_the_project_is_refused(tmp_path: Path) -> None:
    (tmp_path / "app").symlink_to("/")
    with pytest.raises(InputError, match=r"app\.path: / is outside the matrix's directory"):
        load(HEAD + "app: {path: app}\n", tmp_path)


def test_an_app_path_inside_the_project_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "src" / "app").mkdir(parents=True)
    matrix = parse_matrix(HEAD + "app: {path: src/app}\n", tmp_path / "matrix.yaml")
    assert matrix.cells[0].app.path == (tmp_path / "src" / "app").resolve()  # type: ignore[union-attr]


# Size: cells and ids.


def test_a_huge_product_is_refused_from_the_axis_lengths_before_expanding(tmp_path: Path) -> None:
    values = ", ".join(f"'1.{i}'" for i in range(20))
    axes = "".join(f"  {name}: [{values}]\n" for name in ("torch", "numpy", "peft", "einops"))
    started = time.monotonic()
    with pytest.raises(InputError) as caught:
        load(HEAD.replace("axes: {base: [cpu]}\n", f"axes:\n  base: [cpu]\n{axes}"), tmp_path)
    assert "the axes make 160000 combinations (1 x 20 x 20 x 20 x 20)" in caught.value.message
    assert f"more than the {MAX_CELLS} cells" in caught.value.message
    assert time.monotonic() - started < 5


def test_a_long_cell_id_is_cut_to_the_limit_and_made_unique_by_a_hash() -> None:
    pins = [Pin(name=f"package-{i}", specifier=f"=={i}.0.0") for i in range(12)]
    first = cell_id("cu121-py310", [*pins, Pin(name="torch", specifier="==2.4.0")])
    second = cell_id("cu121-py310", [*pins, Pin(name="torch", specifier="==2.5.0")])
    assert first[:MAX_ID] != second[:MAX_ID] and len(first) == len(second) == MAX_ID
    assert first[:103] == second[:103] and re.fullmatch(r"-[0-9a-f]{16}", first[103:])
    assert first == cell_id("cu121-py310", [*pins, Pin(name="torch", specifier="==2.4.0")])
    assert cell_id("b", [Pin(name="torch", specifier="==2.4.0")]) == "b.torch-2.4.0"


def test_two_long_cells_sharing_a_prefix_are_two_cells_not_a_duplicate_id(tmp_path: Path) -> None:
    pins = "".join(f"  package-number-{i}: ['{i}.0.0']\n" for i in range(8))
    text = HEAD.replace(
        "axes: {base: [cpu]}\n", f"axes:\n  base: [cpu]\n{pins}  torch: ['2.4.0', '2.5.0']\n"
    )
    ids = [c.id for c in parse_matrix(text, tmp_path / "matrix.yaml").cells]
    assert len(ids) == 2 and ids[0] != ids[1] and all(len(i) == MAX_ID for i in ids)
