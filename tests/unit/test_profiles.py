"""Model requirement profiles: the shipped ones, `extends`, user profiles, and located errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import InputError
from builder.matrix import parse_matrix
from builder.profiles import (
    SHIPPED,
    load_profiles,
    probe_requirements,
    profiles_for,
    read_known_bad,
    read_profile,
)

SHIPPED_NAMES = ["multitalk", "wan2.1", "wan2.2", "wan2.2-animate", "wan2.2-s2v"]


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(text)
    return path


def matrix_with(tmp_path: Path, profiles: str, extra: str = "") -> str:
    return (
        "version: 1\nbases:\n  b: {image: img, python: '3.11', cuda: '12.1'}\n"
        f"axes:\n  base: [b]\nprofiles: {profiles}\n{extra}"
    )


def test_the_shipped_profiles_load() -> None:
    assert sorted(load_profiles()) == SHIPPED_NAMES


def test_every_shipped_rule_and_fact_names_its_source() -> None:
    # the rules' citations and quotes: tests/unit/test_profile_sources.py
    for path in sorted(SHIPPED.glob("*.yaml")):
        raw = read_profile(path)
        assert raw.source.startswith("https://"), path
        assert all(rule.kind and rule.quote for rule in raw.requirements), path
        assert all(source.startswith(f"{raw.name}: ") for _, _, source in raw.facts)
        assert all(len(source) > len(f"{raw.name}: https://") for _, _, source in raw.facts)


def test_wan22_replaces_wan21s_transformers_rule_and_keeps_the_rest() -> None:
    profiles = load_profiles()
    wan21, wan22 = profiles["wan2.1"], profiles["wan2.2"]
    assert wan21.rule("transformers").range == ">=4.49.0"  # type: ignore[union-attr]
    assert wan22.rule("transformers").range == ">=4.49.0,<=4.51.3"  # type: ignore[union-attr]
    assert wan22.rule("torchaudio") is not None
    assert wan22.rule("flash-attn").optional  # type: ignore[union-attr]
    assert wan22.rule("dashscope").profile == "wan2.1"  # type: ignore[union-attr]
    assert wan22.chain == ("wan2.2", "wan2.1")
    assert {"torch", "cv2", "torchaudio"} <= set(wan22.imports)
    assert wan22.optional_imports == ("flash_attn",)


def test_wan22_s2v_needs_its_speech_extras_and_a_gpu_at_import() -> None:
    s2v = load_profiles()["wan2.2-s2v"]
    for name in ("librosa", "decord", "peft", "torchaudio"):
        assert s2v.rule(name) is not None and not s2v.rule(name).optional  # type: ignore[union-attr]
    assert s2v.rule("sentencepiece") is None and s2v.rule("soundfile") is None  # no source
    assert s2v.rule("openai-whisper").optional  # type: ignore[union-attr]
    assert s2v.rule("decord").alternatives == ("decord2", "eva-decord")  # type: ignore[union-attr]
    assert s2v.gpu_at_import
    assert "torch.cuda.current_device()" in s2v.source_of("gpu_at_import")
    assert s2v.generate_variant is None  # stated null, replacing wan2.2's


def test_multitalk_states_what_its_install_guide_and_code_need() -> None:
    multitalk = load_profiles()["multitalk"]
    code, readme = multitalk.rules_for("torch")
    assert (code.kind, code.range, code.soft) == ("code", "", False)
    assert (readme.kind, readme.range, readme.soft) == ("readme", "==2.4.1", True)
    assert [r.kind for r in multitalk.rules_for("xformers")] == ["code", "readme"]
    assert multitalk.rule("optimum-quanto").range == "==0.2.6"  # type: ignore[union-attr]
    for name in ("soundfile", "librosa", "xformers", "misaki", "xfuser", "gradio"):
        assert multitalk.rule(name) is not None, name
    assert multitalk.loads_bin_weights
    assert multitalk.generate_variant == "multitalk-audio"


def test_a_user_profile_overrides_a_shipped_one_of_the_same_name(tmp_path: Path) -> None:
    write(tmp_path, "wan2.1", "name: wan2.1\nsource: mine\nrequirements: []\n")
    profiles = load_profiles([tmp_path])
    assert profiles["wan2.1"].source == "mine"
    assert profiles["wan2.1"].rule("torch") is None
    assert profiles["wan2.2"].rule("dashscope") is None  # children see the override too


def test_a_user_profile_can_extend_a_shipped_one(tmp_path: Path) -> None:
    write(
        tmp_path,
        "my-wan",
        (
            "name: my-wan\nextends: wan2.2\nsource: ./requirements.txt\n"
            "requirements:\n  - {requirement: peft>=0.17, source: ./app.py}\n"
            "known_bad:\n  - when: {peft: '<0.15'}\n    reason: old peft\n    source: ./notes.md\n"
            "loads_bin_weights: {value: true, source: ./app.py}\n"
        ),
    )
    mine = load_profiles([tmp_path])["my-wan"]
    assert mine.rule("peft").source == "./app.py"  # type: ignore[union-attr]
    assert mine.rule("transformers").profile == "wan2.2"  # type: ignore[union-attr]
    assert mine.loads_bin_weights and mine.source_of("loads_bin_weights") == "my-wan: ./app.py"
    assert mine.known_bad[0].source == "my-wan: ./notes.md"


def test_a_user_rule_may_keep_a_free_text_source_and_is_held_as_a_requirement(
    tmp_path: Path,
) -> None:
    write(
        tmp_path,
        "p",
        "name: p\nsource: s\nrequirements:\n  - {requirement: peft, source: ./app.py:3}\n",
    )
    rule = load_profiles([tmp_path])["p"].rule("peft")
    assert rule is not None and (rule.kind, rule.quote, rule.soft) == (None, "", False)


CITED = "o/r@" + "a" * 40 + ":README.md:12"


def test_a_distribution_may_have_one_rule_per_kind_of_source(tmp_path: Path) -> None:
    write(
        tmp_path,
        "p",
        "name: p\nsource: s\nrequirements:\n"
        f"  - {{requirement: torch, kind: code, source: '{CITED}', quote: import torch}}\n"
        f"  - {{requirement: torch==2.4.1, kind: readme, source: '{CITED}', quote: pip install torch==2.4.1}}\n",
    )
    rules = load_profiles([tmp_path])["p"].rules_for("torch")
    assert [(r.kind, r.soft, r.cited) for r in rules] == [
        ("code", False, f'{CITED} "import torch"'),
        ("readme", True, f'{CITED} "pip install torch==2.4.1"'),
    ]


def test_a_childs_rule_replaces_every_rule_of_its_parent_for_that_distribution(
    tmp_path: Path,
) -> None:
    write(
        tmp_path,
        "mine",
        "name: mine\nextends: multitalk\nsource: s\n"
        "requirements:\n  - {requirement: torch>=2.5, source: ./requirements.txt:1}\n",
    )
    mine = load_profiles([tmp_path])["mine"]
    assert [r.text for r in mine.rules_for("torch")] == ["torch>=2.5"]
    assert mine.requirements[0].text == "torch>=2.5"  # where the parent's first torch rule was


@pytest.mark.parametrize(
    ("rule", "at", "message"),
    [
        (
            "{requirement: torch, kind: code, source: 'o/r@main:a.py:3', quote: import torch}",
            "'o/r@main",
            "requirements[0].source: commit 'main' is not a full 40-hex commit id",
        ),
        (
            f"{{requirement: torch, kind: code, source: 'o/r@{'a' * 40}:a.py', quote: x}}",
            "'o/r@",
            "requirements[0].source: expected :path:line after the commit, got 'a.py'",
        ),
        (
            "{requirement: torch, kind: code, source: https://github.com/o/r, quote: import torch}",
            "https:",
            "requirements[0].source: expected owner/repo@<40-hex commit>:path:line",
        ),
        (
            "{requirement: torch, source: 'o/r@abc123:a.py:3'}",
            "'o/r@abc123",
            "requirements[0].source: commit 'abc123' is not a full 40-hex commit id",
        ),
        (
            f"{{requirement: torch, kind: code, source: '{CITED}'}}",
            "{",
            "requirements[0].quote: missing required key (a rule with a `kind` quotes the line",
        ),
        (
            f"{{requirement: torch, source: '{CITED}', quote: import torch}}",
            "{",
            "requirements[0].kind: missing required key (a rule with a `quote` states its kind",
        ),
        (
            f"{{requirement: torch, kind: readmee, source: '{CITED}', quote: x}}",
            "readmee",
            "requirements[0].kind: expected one of requirements, code, readme, maintainer "
            "(did you mean 'readme'?)",
        ),
        (
            f"{{requirement: torch, kind: code, source: '{CITED}', quote: 2.4}}",
            "2.4",
            "requirements[0].quote: expected the source line as text",
        ),
    ],
)
def test_a_bad_citation_is_located_by_line_column_and_field(
    tmp_path: Path, rule: str, at: str, message: str
) -> None:
    write(tmp_path, "p", f"name: p\nsource: s\nrequirements:\n  - {rule}\n")
    with pytest.raises(InputError) as error:
        load_profiles([tmp_path])
    where = f"{tmp_path / 'p.yaml'}:4:{len('  - ') + rule.index(at) + 1}: "
    assert error.value.message.startswith(where), error.value.message
    assert message in error.value.message


def test_a_second_rule_of_the_same_kind_for_one_distribution_is_refused(tmp_path: Path) -> None:
    write(
        tmp_path,
        "p",
        "name: p\nsource: s\nrequirements:\n  - {requirement: torch, source: a}\n"
        "  - {requirement: torch>=2, source: b}\n",
    )
    with pytest.raises(InputError) as error:
        load_profiles([tmp_path])
    assert error.value.message == (
        f"{tmp_path / 'p.yaml'}:5:5: requirements[1]: a second rule for torch "
        "(the first is requirements[0])"
    )


def test_profiles_for_gives_the_cells_profiles_flattened(tmp_path: Path) -> None:
    matrix = parse_matrix(matrix_with(tmp_path, "[wan2.2-s2v, multitalk]"), tmp_path / "m.yaml")
    names = [p.name for p in profiles_for(matrix, matrix.cells[0])]
    assert names == ["wan2.2-s2v", "multitalk"]


def test_an_unknown_profile_in_a_matrix_is_located_there_with_a_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "matrix.yaml"
    path.write_text(matrix_with(tmp_path, "[wan2.1, wan22-s2v]"))
    matrix = parse_matrix(path.read_text(), path)
    with pytest.raises(InputError) as error:
        profiles_for(matrix, matrix.cells[0])
    assert error.value.message == (
        f"{path}:6:20: profiles[1]: unknown profile 'wan22-s2v' (did you mean 'wan2.2-s2v'?)"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "name: p\nsource: s\nrequirments: []\n",
            "p.yaml:3:1: requirments: unknown key (did you mean 'requirements'?)",
        ),
        (
            "name: p\nsource: s\nrequirements:\n  - {requirement: 'torch>=2.4,<', source: s}\n",
            "p.yaml:4:19: requirements[0].requirement: invalid requirement 'torch>=2.4,<'",
        ),
        (
            "name: p\nsource: s\nrequirements:\n  - {requirement: torch}\n",
            "p.yaml:4:5: requirements[0].source: missing required key",
        ),
        ("name: p\nsource: s\npython: '3.10'\n", "p.yaml:3:9: python: invalid Python range '3.10'"),
        (
            "name: p\nsource: s\ngenerate_variant: wan2.2-a14\n",
            "p.yaml:3:19: generate_variant: unknown variant 'wan2.2-a14' (did you mean 'wan2.2-a14b'?)",
        ),
        (
            "name: p\nsource: s\ngpu_at_import: {value: yes please, source: s}\n",
            "p.yaml:3:24: gpu_at_import: expected true or false",
        ),
        (
            "name: p\nsource: s\nknown_bad:\n  - {when: {numpy: '>=two'}, reason: r, source: s}\n",
            "p.yaml:4:20: known_bad[0].when.numpy: invalid version specifier '>=two'",
        ),
        ("name: q\nsource: s\n", "p.yaml:1:7: name: 'q' does not match the file name 'p.yaml'"),
        ("name: p\nsource: [s\n", "p.yaml:3:1: YAML syntax error"),
    ],
)
def test_profile_problems_are_located_by_line_column_and_field(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, "p", text)
    with pytest.raises(InputError) as error:
        load_profiles([tmp_path])
    assert error.value.message.startswith(f"{tmp_path / message.split(':')[0]}:")
    assert message.split(" ", 1)[0].split(":", 1)[1] in error.value.message
    assert message.split(": ", 1)[1] in error.value.message
    assert path.name in error.value.message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: p\nsource: !foo s\n", "p.yaml:2:9: source: YAML tag !foo is not supported"),
        (
            "name: p\nsource: s\nimports: &i [torch, *i]\n",
            "p.yaml:3:21: imports[1]: YAML alias *i is inside the value it names",
        ),
        (
            "name: p\nsource: s\nknown_bad:\n  - {<<: {when: {}}, reason: r, source: s}\n",
            "p.yaml:4:6: known_bad[0]: YAML merge keys (<<) are not supported",
        ),
        (
            "name: p\nsource: s\nmin_gpu_memory_gb: !!float x\n",
            "p.yaml:3:20: min_gpu_memory_gb: 'x' is not a valid !!float",
        ),
        (
            "name: p\nsource: s\nmin_gpu_memory_gb: .inf\n",
            "p.yaml:3:20: min_gpu_memory_gb: expected a finite number",
        ),
    ],
)
def test_a_profile_with_a_refused_yaml_feature_is_a_located_input_error(
    tmp_path: Path, text: str, message: str
) -> None:
    write(tmp_path, "p", text)
    with pytest.raises(InputError) as error:
        load_profiles([tmp_path])
    assert f"{tmp_path / message}" in error.value.message


def test_a_profile_may_alias_a_value_it_states_once(tmp_path: Path) -> None:
    write(
        tmp_path,
        "p",
        "name: p\nsource: &src s\nimports: [torch]\nrequirements:\n"
        "  - {requirement: torch, source: *src}\n",
    )
    assert load_profiles([tmp_path])["p"].rule("torch").source == "s"  # type: ignore[union-attr]


def test_an_extends_cycle_is_named(tmp_path: Path) -> None:
    write(tmp_path, "a", "name: a\nextends: b\nsource: s\n")
    write(tmp_path, "b", "name: b\nextends: a\nsource: s\n")
    with pytest.raises(InputError, match=r"b\.yaml:2:10: extends: cycle: a -> b -> a"):
        load_profiles([tmp_path])


def test_an_unknown_parent_gets_a_suggestion(tmp_path: Path) -> None:
    write(tmp_path, "a", "name: a\nextends: wan2.3\nsource: s\n")
    with pytest.raises(InputError, match=r"unknown profile 'wan2.3' \(did you mean 'wan2.2'\?\)"):
        load_profiles([tmp_path])


def test_probe_requirements_gives_the_imports_and_variants_of_the_cells_profiles(
    tmp_path: Path,
) -> None:
    matrix = parse_matrix(matrix_with(tmp_path, "[wan2.2, multitalk]"), tmp_path / "m.yaml")
    cell = matrix.cells[0]
    imports = probe_requirements(matrix, cell, "imports")
    assert "torchaudio" in imports["imports"] and "xfuser" in imports["imports"]
    assert imports["optional_imports"] == ["flash_attn"]
    assert probe_requirements(matrix, cell, "generate") == {
        "variants": ["wan2.2-a14b", "multitalk-audio"],
        "required_variants": ["wan2.2-a14b", "multitalk-audio"],
    }
    assert probe_requirements(matrix, cell, "model-dir") == {"min_gpu_memory_gb": 80.0}
    assert probe_requirements(matrix, cell, "numpy") == {}


def test_the_shared_table_reads_like_a_profiles_known_bad(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "issues",
        (
            "known_bad:\n  - when: {torch: '<2.3', numpy: '>=2'}\n    reason: r\n    source: s\n"
            "    profile: {loads_bin_weights: [true]}\n"
        ),
    )
    (row,) = read_known_bad(path)
    assert [name for name, _ in row.when] == ["torch", "numpy"]
    assert row.profile == (("loads_bin_weights", (True,)),)
