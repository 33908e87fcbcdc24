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
    for path in sorted(SHIPPED.glob("*.yaml")):
        raw = read_profile(path)
        assert raw.source.startswith("https://"), path
        assert all(rule.source.startswith("https://") for rule in raw.requirements), path
        assert all(source.startswith(f"{raw.name}: https://") for _, _, source in raw.facts)


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
    for name in ("librosa", "decord", "peft", "sentencepiece", "soundfile", "torchaudio"):
        assert s2v.rule(name) is not None and not s2v.rule(name).optional  # type: ignore[union-attr]
    assert s2v.rule("openai-whisper").optional  # type: ignore[union-attr]
    assert s2v.rule("decord").alternatives == ("decord2", "eva-decord")  # type: ignore[union-attr]
    assert s2v.gpu_at_import
    assert "torch.cuda.current_device()" in s2v.source_of("gpu_at_import")
    assert s2v.generate_variant is None  # stated null, replacing wan2.2's


def test_multitalk_states_what_its_install_guide_and_code_need() -> None:
    multitalk = load_profiles()["multitalk"]
    assert multitalk.rule("torch").range == "==2.4.1"  # type: ignore[union-attr]
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
