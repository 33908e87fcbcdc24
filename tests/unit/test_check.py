"""`builder check`, offline: recorded uv resolutions and a recorded, trimmed package index.

Each case under tests/fixtures/check/ reproduces one seed failure in its first cell and applies
the fix in its second (expected.yaml says which). tests/fixtures/check/record.py re-records.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from builder import errors
from builder.check import (
    Context,
    Finding,
    Options,
    check_cells,
    conflict,
    load_known_issues,
    render_json,
    render_text,
    rule_companions,
    rule_cuda,
    rule_gpu,
    rule_known_bad,
    rule_metadata,
    rule_preinstalled,
    rule_profiles,
    rule_python,
    rule_wheels,
    supported_tags,
)
from builder.check.metadata import (
    PYPI,
    File,
    IndexCache,
    MetadataError,
    Project,
    Sources,
    Wheelhouse,
)
from builder.check.results import Change
from builder.check.rules import declared_cuda
from builder.cli import cli
from builder.lock import Resolution, header, inputs_digest, lock_path, normalize
from builder.matrix import Cell, load_matrix, parse_matrix
from builder.profiles import load_profiles
from builder.settings import Settings

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CASES = sorted(p.name for p in (FIXTURES / "check").iterdir() if (p / "matrix.yaml").is_file())


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """A cache directory holding the recorded index (resolutions get written next to it)."""
    shutil.copytree(FIXTURES / "index", tmp_path / "cache")
    return tmp_path / "cache"


def recorded(case: Path) -> Any:
    """A resolver that answers with what uv answered when the case was recorded."""

    def resolver(cell: Cell, settings: Settings, offline: bool) -> Resolution:
        body = case / "resolved" / f"{cell.id}.txt"
        if body.is_file():
            return Resolution(ok=True, body=body.read_text())
        return Resolution(ok=False, error=(case / "resolved" / f"{cell.id}.error").read_text())

    return resolver


def run_case(name: str, cache: Path) -> dict[str, Any]:
    case = FIXTURES / "check" / name
    matrix = load_matrix(case / "matrix.yaml")
    options = Options(
        settings=Settings(metadata_cache=cache), offline=True, resolver=recorded(case)
    )
    return {r.id: r for r in check_cells(matrix, matrix.cells, options)}


def expected(name: str) -> dict[str, str]:
    data: dict[str, str] = yaml.safe_load((FIXTURES / "check" / name / "expected.yaml").read_text())
    return data


@pytest.mark.parametrize("name", CASES)
def test_each_seed_failure_is_an_error_with_its_code_and_a_correct_hint(
    name: str, cache: Path
) -> None:
    want = expected(name)
    report = run_case(name, cache)[want["seed"]]
    found = [f for f in report.findings if f.code == want["code"]]
    assert found, [f.code for f in report.findings]
    assert found[0].severity == "error"
    assert found[0].package == want["package"]
    assert want["hint"] in found[0].hint
    assert want["message"] in found[0].message
    assert found[0].source
    assert not report.ok


@pytest.mark.parametrize("name", CASES)
def test_the_same_cell_with_the_fix_applied_has_no_error(name: str, cache: Path) -> None:
    report = run_case(name, cache)[expected(name)["fixed"]]
    assert report.ok, [(f.code, f.message) for f in report.findings]


def test_wan22_transformers_finding_names_the_range_and_suggests_the_highest_release(
    cache: Path,
) -> None:
    report = run_case("transformers-wan22", cache)["cu121.transformers-4.47.0"]
    (finding,) = [f for f in report.findings if f.severity == "error"]
    assert finding.message == (
        "transformers 4.47.0 is outside wan2.2-s2v's (from wan2.2) range >=4.49.0,<=4.51.3"
    )
    assert "transformers==4.51.3" in finding.hint
    assert finding.source == (
        "profile wan2.2: Wan-Video/Wan2.2@e3a3ae198edba857a29b05cf11d844f6b161ad9b"
        ':requirements.txt:6 "transformers>=4.49.0,<=4.51.3"'
    )


def test_a_conflict_names_the_conflicting_requirements_not_uvs_whole_text(cache: Path) -> None:
    report = run_case("tokenizers-range", cache)["py311.tokenizers-0.20.3"]
    (finding,) = [f for f in report.findings if f.code == "unresolvable"]
    assert finding.message == (
        "the requirements conflict: transformers==4.51.3 depends on tokenizers>=0.21,<0.22; "
        "you require transformers==4.51.3; you require tokenizers==0.20.3"
    )
    assert finding.source == "matrix.yaml:10"


def test_uv_failing_on_a_platform_becomes_a_no_wheel_finding_not_a_conflict(cache: Path) -> None:
    report = run_case("decord-arm64", cache)["seed.decord-0.6.0"]
    assert [f.code for f in report.findings] == ["no-wheel"]


def test_json_output_has_exactly_the_documented_shape(cache: Path) -> None:
    reports = list(run_case("peft-missing", cache).values())
    data = json.loads(render_json(reports))
    assert list(data) == ["cells"]
    assert [c["status"] for c in data["cells"]] == ["fail", "pass"]
    assert set(data["cells"][0]) == {"id", "status", "findings"}
    assert set(data["cells"][0]["findings"][0]) == {
        "severity",
        "code",
        "package",
        "message",
        "hint",
        "source",
        "fix",
    }


def test_text_output_says_what_failed_what_to_do_and_where_it_comes_from(cache: Path) -> None:
    text = render_text(list(run_case("peft-missing", cache).values()))
    assert "FAIL seed  (1 error)" in text
    assert "hint: add `peft` to the matrix `requirements`" in text
    assert "source: profile wan2.2-s2v: Wan-Video/Wan2.2@84b91a8" in text
    assert 'wan/animate.py:14 "from peft import set_peft_model_state_dict"' in text
    assert text.endswith("2 cell(s) checked: 1 failed, 1 passed")


def seed_resolutions(case: str, cache: Path) -> None:
    """Put the recorded resolutions where `check` caches uv's answers."""
    matrix = load_matrix(FIXTURES / "check" / case / "matrix.yaml")
    for cell in matrix.cells:
        result = recorded(FIXTURES / "check" / case)(cell, Settings(), True)
        path = cache / "resolutions" / f"{inputs_digest(cell, 'uv')}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"ok": result.ok, "body": result.body, "error": result.error}))


def test_the_command_exits_1_when_a_cell_has_an_error_and_prints_json(cache: Path) -> None:
    seed_resolutions("numpy2-torch21", cache)
    matrix = FIXTURES / "check" / "numpy2-torch21" / "matrix.yaml"
    result = CliRunner().invoke(
        cli,
        ["check", "-m", str(matrix), "--offline", "--format", "json"],
        env={"BUILDER_METADATA_CACHE": str(cache)},
        standalone_mode=False,
    )
    assert result.return_value == errors.CELLS_FAILED, result.output
    cells = json.loads(result.stdout)["cells"]
    assert [c["findings"][0]["code"] for c in cells if c["status"] == "fail"] == ["known-bad"]


def test_the_command_exits_0_for_the_fixed_cell_alone(cache: Path) -> None:
    seed_resolutions("numpy2-torch21", cache)
    matrix = FIXTURES / "check" / "numpy2-torch21" / "matrix.yaml"
    result = CliRunner().invoke(
        cli,
        ["check", "-m", str(matrix), "--offline", "--cell", "fixed*"],
        env={"BUILDER_METADATA_CACHE": str(cache)},
        standalone_mode=False,
    )
    assert result.return_value == errors.OK, result.output
    assert "ok   fixed.numpy-ge1.23.5-lt2" in result.stdout


def test_an_unknown_profile_in_the_matrix_is_bad_input(tmp_path: Path) -> None:
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(
        "version: 1\nbases:\n  b: {image: python:3.11, python: '3.11'}\n"
        "axes:\n  base: [b]\nprofiles: [wan2.2-sv2]\n"
    )
    with pytest.raises(SystemExit) as exit_info:
        from builder.cli import main

        main(["check", "-m", str(matrix), "--offline"])
    assert exit_info.value.code == errors.INVALID_INPUT


# ---------------------------------------------------------------- single rules, offline


def context(
    tmp_path: Path,
    versions: Mapping[str, str],
    *,
    base: str = "{image: img, python: '3.10', cuda: '12.1'}",
    profiles: tuple[str, ...] = (),
    gpu: str = "optional",
    resolved: bool = True,
    axes: str = "",
) -> Context:
    text = (
        f"version: 1\nbases:\n  b: {base}\naxes:\n  base: [b]\n{axes}"
        f"profiles: [{', '.join(profiles)}]\ngpu: {gpu}\n"
    )
    matrix = parse_matrix(text, tmp_path / "matrix.yaml")
    known = load_profiles()
    return Context(
        cell=matrix.cells[0],
        where="matrix.yaml:5",
        profiles=tuple(known[p] for p in profiles),
        versions={k: Version(v) for k, v in versions.items()},
        resolved=resolved,
        pinned={},
        metadata=IndexCache(PYPI, FIXTURES / "index"),  # offline: the recorded files only
        issues=load_known_issues(),
    )


def codes(findings: Any) -> list[tuple[str, str | None]]:
    return [(f.code, f.package) for f in findings]


def test_an_unresolved_cells_range_pin_outside_the_profile_range_is_named(
    tmp_path: Path,
) -> None:
    ctx = context(
        tmp_path, {}, profiles=("wan2.2",), resolved=False, axes="  transformers: ['>=4.52']\n"
    )
    (finding,) = [f for f in rule_profiles(ctx) if f.package == "transformers"]
    assert finding.code == "profile-range"
    assert finding.message.startswith("the pin transformers>=4.52 leaves no release inside")
    assert "transformers==4.51.3" in finding.hint
    assert not [f for f in rule_profiles(ctx) if f.code == "profile-missing-package"]


MULTITALK_TORCH_25 = {
    "torch": "2.5.1",
    "torchvision": "0.20.1",
    "torchaudio": "2.5.1",
    "xformers": "0.0.28.post3",
    "misaki": "0.9.4",
    "opencv-python": "4.10.0.84",
    "diffusers": "0.35.1",
    "transformers": "4.51.3",
    "tokenizers": "0.21.0",
    "accelerate": "1.1.1",
    "tqdm": "4.67.1",
    "imageio": "2.36.1",
    "easydict": "1.13",
    "ftfy": "6.3.1",
    "dashscope": "1.20.0",
    "imageio-ffmpeg": "0.5.1",
    "scikit-image": "0.24.0",
    "loguru": "0.7.2",
    "gradio": "5.0.0",
    "numpy": "1.26.4",
    "xfuser": "0.4.1",
    "pyloudnorm": "0.1.1",
    "optimum-quanto": "0.2.6",
    "librosa": "0.10.2",
    "soundfile": "0.12.1",
    "einops": "0.8.0",
}


def test_a_torch_25_multitalk_cell_gets_tested_with_warnings_not_errors(tmp_path: Path) -> None:
    findings = list(rule_profiles(context(tmp_path, MULTITALK_TORCH_25, profiles=("multitalk",))))
    assert [(f.severity, f.code, f.package) for f in findings] == [
        ("warning", "profile-range", name)
        for name in ("torch", "torchvision", "torchaudio", "xformers")
    ]
    torch = findings[0]
    tested = "what multitalk's README was tested with (==2.4.1)"
    assert torch.message == f"torch 2.5.1 is outside {tested}"
    assert torch.hint.startswith("a tested-with note, not a requirement")
    assert torch.source.startswith("profile multitalk: MeiGen-AI/MultiTalk@0454343ce7f2bbc3")
    assert torch.source.endswith(
        'README.md:122 "pip install torch==2.4.1 torchvision==0.19.1 '
        'torchaudio==2.4.1 --index-url https://download.pytorch.org/whl/cu121"'
    )


def test_a_missing_package_the_code_imports_is_an_error_once_and_a_readme_pin_alone_warns(
    tmp_path: Path,
) -> None:
    versions = {k: v for k, v in MULTITALK_TORCH_25.items() if k not in ("xformers", "torchaudio")}
    findings = list(rule_profiles(context(tmp_path, versions, profiles=("multitalk",))))
    missing = [(f.severity, f.package) for f in findings if f.code == "profile-missing-package"]
    assert missing == [("warning", "torchaudio"), ("error", "xformers")]
    (audio,) = [f for f in findings if f.package == "torchaudio"]
    assert audio.message == (
        "multitalk's README was tested with torchaudio==2.4.1, and the cell does not install "
        "torchaudio"
    )


def test_a_package_whose_release_needs_a_newer_python_is_unsupported(tmp_path: Path) -> None:
    (finding,) = rule_python(context(tmp_path, {"numpy": "2.3.0"}))
    assert (finding.code, finding.package) == ("python-unsupported", "numpy")
    assert "requires Python >=3.11" in finding.message
    assert "numpy==2.2.6" in finding.hint


def test_a_profile_python_range_is_checked_against_the_base(tmp_path: Path) -> None:
    ctx = context(
        tmp_path, {}, base="{image: img, python: '3.9', cuda: '12.1'}", profiles=("wan2.2",)
    )
    assert codes(rule_python(ctx)) == [("python-unsupported", None)]


def test_torchvision_built_for_another_torch_minor_is_an_error(tmp_path: Path) -> None:
    ctx = context(tmp_path, {"torch": "2.4.0", "torchvision": "0.20.0", "torchaudio": "2.4.0"})
    (finding,) = rule_companions(ctx)
    assert (finding.code, finding.package) == ("companion-mismatch", "torchvision")
    assert "torchvision==0.19.1" in finding.hint


def test_matching_torch_companions_pass(tmp_path: Path) -> None:
    ctx = context(tmp_path, {"torch": "2.4.0", "torchvision": "0.19.0", "torchaudio": "2.4.0"})
    assert list(rule_companions(ctx)) == []


def test_the_companion_table_reaches_torch_2_13(tmp_path: Path) -> None:
    ctx = context(tmp_path, {"torch": "2.13.0+cpu", "torchvision": "0.27.0"})
    (finding,) = rule_companions(ctx)
    assert "0.28" in finding.message + finding.hint
    assert (
        list(rule_companions(context(tmp_path, {"torch": "2.13.0", "torchvision": "0.28.0"}))) == []
    )


@pytest.mark.parametrize(
    ("torch", "cuda", "bad"),
    [
        ("2.4.0", "11.8", True),  # PyPI's default 2.4 wheel is CUDA 12.1: other major
        ("2.5.1", "12.1", True),  # CUDA 12.4 wheel on a 12.1 base: newer minor
        ("2.4.0", "12.4", False),
        ("2.4.0+cu118", "12.1", True),
        ("2.4.0+cu121", "12.1", False),
        ("2.11.0", "12.8", True),  # from 2.11 PyPI's default wheel is CUDA 13.0
        ("2.13.0", "13.0", False),
    ],
)
def test_a_torch_wheel_must_be_runnable_on_the_base_cuda(
    tmp_path: Path, torch: str, cuda: str, bad: bool
) -> None:
    ctx = context(
        tmp_path, {"torch": torch}, base=f"{{image: img, python: '3.10', cuda: '{cuda}'}}"
    )
    assert codes(rule_cuda(ctx)) == ([("cuda-mismatch", "torch")] if bad else [])


def test_a_cpu_only_torch_in_a_cell_that_requires_a_gpu_is_an_error(tmp_path: Path) -> None:
    ctx = context(tmp_path, {"torch": "2.4.0+cpu"}, gpu="required")
    assert codes(rule_cuda(ctx)) == [("cuda-mismatch", "torch")]


def test_replacing_the_base_preinstalled_torch_is_a_warning(tmp_path: Path) -> None:
    base = "{image: img, python: '3.10', cuda: '12.1', preinstalled: [torch==2.1.0]}"
    (finding,) = rule_preinstalled(context(tmp_path, {"torch": "2.4.0"}, base=base))
    assert (finding.severity, finding.code) == ("warning", "preinstalled-replaced")
    assert list(rule_preinstalled(context(tmp_path, {"torch": "2.1.0"}, base=base))) == []


def test_a_model_that_needs_a_gpu_at_import_fails_on_a_cpu_base(tmp_path: Path) -> None:
    ctx = context(
        tmp_path, {}, base="{image: img, python: '3.11', cuda: null}", profiles=("wan2.2-s2v",)
    )
    (finding,) = rule_gpu(ctx)
    assert finding.code == "gpu-at-import"
    assert "current_device" in finding.source


def test_an_sdist_only_compiled_release_needs_a_build(tmp_path: Path) -> None:
    ctx = context(tmp_path, {"numpy": "1.26.4"}, base="{image: img, python: '3.13', cuda: null}")
    assert codes(rule_wheels(ctx)) == [("needs-build", "numpy")]


def test_a_pure_python_sdist_is_only_information(tmp_path: Path) -> None:
    (finding,) = rule_wheels(context(tmp_path, {"docopt": "0.6.2"}))
    assert (finding.severity, finding.code) == ("info", "sdist-only")


def test_a_wheel_for_the_platform_passes(tmp_path: Path) -> None:
    assert list(rule_wheels(context(tmp_path, {"decord": "0.6.0"}))) == []


def test_packages_without_metadata_are_reported_once_as_information(tmp_path: Path) -> None:
    (finding,) = rule_metadata(context(tmp_path, {"not-on-the-index": "1.0", "numpy": "1.26.4"}))
    assert (finding.severity, finding.code) == ("info", "metadata-missing")
    assert "not-on-the-index" in finding.message


def test_a_bin_weights_row_only_applies_to_models_that_load_bin_weights(tmp_path: Path) -> None:
    versions = {"transformers": "4.52.4", "torch": "2.4.1"}
    assert codes(rule_known_bad(context(tmp_path, versions, profiles=("multitalk",)))) == [
        ("known-bad", "transformers")
    ]
    assert list(rule_known_bad(context(tmp_path, versions, profiles=("wan2.1",)))) == []


@pytest.mark.parametrize(
    ("versions", "expected"),
    [
        # transformers 5's torch minimum moved per release: 2.2, then 2.4, 2.5, 2.6
        ({"transformers": "5.0.0", "torch": "2.3.1"}, []),
        ({"transformers": "5.1.0", "torch": "2.3.1"}, [("error", "transformers")]),
        ({"transformers": "5.19.0", "torch": "2.5.1"}, []),
        ({"transformers": "5.20.0", "torch": "2.5.1"}, [("error", "transformers")]),
        ({"transformers": "5.23.0", "torch": "2.6.0+cu124"}, []),
        # diffusers before 0.35.2 imports a name transformers 5 removed
        (
            {"diffusers": "0.35.1", "transformers": "5.2.0", "torch": "2.9.1"},
            [("error", "diffusers")],
        ),
        ({"diffusers": "0.35.2", "transformers": "5.2.0", "torch": "2.9.1"}, []),
        ({"diffusers": "0.35.1", "transformers": "4.57.6", "torch": "2.9.1"}, []),
        # diffusers 0.39 only declares torch>=2.6: a warning, not an error
        ({"diffusers": "0.39.0", "torch": "2.5.1"}, [("warning", "diffusers")]),
    ],
)
def test_transformers_5_and_diffusers_rows_follow_each_release(
    tmp_path: Path, versions: dict[str, str], expected: list[tuple[str, str]]
) -> None:
    found = rule_known_bad(context(tmp_path, versions))
    assert [(f.severity, f.package) for f in found] == expected


def test_every_curated_row_names_its_source() -> None:
    issues = load_known_issues()
    assert issues.known_bad and all(row.source.startswith("http") for row in issues.known_bad)
    assert all(r["source"] for r in (*issues.needs_build.values(), *issues.no_wheel.values()))
    assert issues.companions_source and issues.torch_cuda_source


def test_conflict_keeps_the_premises_of_uvs_explanation() -> None:
    text = (
        "error: No solution found when resolving dependencies\n"
        "  cause: Because the requested Python version (>=3.10) does not satisfy Python>=3.11 "
        "and numpy==2.3.0 depends on Python>=3.11, we can conclude that numpy==2.3.0 cannot be "
        "used.\n         And because you require numpy==2.3.0, we can conclude that your "
        "requirements are unsatisfiable."
    )
    assert conflict(text) == [
        "the requested Python version (>=3.10) does not satisfy Python>=3.11",
        "numpy==2.3.0 depends on Python>=3.11",
        "you require numpy==2.3.0",
    ]


def test_supported_tags_follow_the_cell_platform_and_python() -> None:
    amd64 = {str(t) for t in supported_tags("3.10", "linux/amd64")}
    arm64 = {str(t) for t in supported_tags("3.10", "linux/arm64")}
    assert "py3-none-manylinux2010_x86_64" in amd64
    assert "cp310-abi3-manylinux_2_28_x86_64" in amd64
    assert "cp311-cp311-manylinux_2_28_x86_64" not in amd64
    assert not any("x86_64" in t for t in arm64)
    assert "cp310-cp310-manylinux2014_aarch64" in arm64
    assert "py3-none-any" in arm64


def test_findings_are_frozen_data() -> None:
    finding = Finding(severity="error", code="x", package=None, message="m", hint="h", source="s")
    assert finding.to_json()["package"] is None
    with pytest.raises(AttributeError):
        finding.code = "y"  # type: ignore[misc]


def test_a_fresh_lock_is_what_check_reads_and_uv_is_not_asked(tmp_path: Path, cache: Path) -> None:
    case = shutil.copytree(FIXTURES / "check" / "tokenizers-range", tmp_path / "case")
    matrix = load_matrix(case / "matrix.yaml")
    fixed = matrix.cells[1]
    resolved = (case / "resolved" / f"{fixed.id}.txt").read_text()
    body = normalize(resolved).replace("tokenizers==0.21.1", "tokenizers==0.20.3")
    lock_path(matrix, fixed).parent.mkdir()
    lock_path(matrix, fixed).write_text(
        header(matrix.path, fixed, inputs_digest(fixed, "uv"), "uv", body) + body
    )

    def no_uv(cell: Cell, settings: Settings, offline: bool) -> Resolution:
        # only a fix's re-check, a variant of the cell, may ask (builder/check/fixes.py)
        assert cell.requirement_lines() != fixed.requirement_lines(), "the lock is fresh"
        return Resolution(ok=False, error="tokenizers was not found in the cache")

    options = Options(settings=Settings(metadata_cache=cache), offline=True, resolver=no_uv)
    (report,) = check_cells(matrix, [fixed], options)
    assert [f.code for f in report.findings] == ["dependency-range"]


def test_a_wheel_in_the_cells_wheelhouse_fixes_a_needs_build(tmp_path: Path) -> None:
    house = tmp_path / "wheels"
    house.mkdir()
    (house / "flash_attn-2.8.3-cp310-cp310-linux_x86_64.whl").write_bytes(b"")
    ctx = context(tmp_path, {"flash-attn": "2.8.3"})
    assert codes(rule_wheels(ctx)) == [("needs-build", "flash-attn")]
    index = IndexCache(PYPI, FIXTURES / "index")
    with_house = replace(ctx, metadata=Sources((index,), Wheelhouse((house,))))
    assert list(rule_wheels(with_house)) == []


# ---------------------------------------------------------------- every torch's CUDA; builds


# What torch declares on PyPI (the Requires-Dist lines that carry CUDA), release by release.
TORCH_2_10 = (
    'cuda-bindings==12.9.4; platform_system == "Linux" and platform_machine == "x86_64"',
    'nvidia-cuda-runtime-cu12==12.8.90; platform_system == "Linux" and platform_machine == "x86_64"',
)
TORCH_2_15 = (
    "cuda-toolkit[cublas,cudart,cufft,cufile,cupti,cusolver,cusparse,nvjitlink,nvrtc,nvtx]"
    '==13.2.2; platform_system == "Linux"',
    'cuda-bindings<14,>=13.0.3; platform_system == "Linux" and python_version < "3.15"',
    'nvidia-cudnn-cu13==9.26.0.51; platform_system == "Linux"',
)


class FakeMetadata:
    """The recorded index, with some releases' Requires-Dist and some projects' files given."""

    def __init__(
        self,
        requires: Mapping[tuple[str, str], tuple[str, ...]] | None = None,
        files: Mapping[str, tuple[str, ...]] | None = None,
    ) -> None:
        self.index = IndexCache(PYPI, FIXTURES / "index")
        self.requires, self.files = requires or {}, files or {}

    def project(self, name: str) -> Project | None:
        if name in self.files:
            return Project(name=name, files=tuple(File(filename=f) for f in self.files[name]))
        return self.index.project(name)

    def requires_dist(self, name: str, version: Version) -> tuple[str, ...] | None:
        return self.requires.get((name, str(version))) or self.index.requires_dist(name, version)


@pytest.mark.parametrize(
    ("requires", "cuda"),
    [
        (TORCH_2_10, (12, 8)),  # the runtime's pin, not cuda-bindings' own version
        (TORCH_2_15, (13, 2)),  # cuda-toolkit==13.2.2, torch 2.11 on
        (('nvidia-cuda-runtime==13.0.*; platform_system == "Linux"',), (13, 0)),
        (("nvidia-cudnn-cu14==10.1.0.1",), (14, None)),  # only the suffix: the major alone
        (("filelock", "sympy>=1.13.3"), None),
    ],
)
def test_the_cuda_torch_declares_is_read_however_each_release_says_it(
    tmp_path: Path, requires: tuple[str, ...], cuda: tuple[int, int | None] | None
) -> None:
    found = declared_cuda(requires, context(tmp_path, {}).markers())
    assert (found[0] if found else None) == cuda


def test_an_unpinned_torch_on_a_cuda_12_4_base_names_its_cuda_and_the_torch_that_holds(
    tmp_path: Path,
) -> None:
    base = "{image: nvidia/cuda:12.4.1-runtime-ubuntu22.04, python: '3.11', cuda: '12.4'}"
    ctx = context(tmp_path, {"torch": "2.15.0"}, base=base)
    ctx = replace(ctx, metadata=FakeMetadata({("torch", "2.15.0"): TORCH_2_15}))
    (finding,) = rule_cuda(ctx)
    assert finding.message.startswith("torch 2.15.0 (pulled in by another requirement")
    assert "is built for CUDA 13.2; base b has CUDA 12.4" in finding.message
    assert finding.hint.startswith("use torch==2.6.0 (the newest torch whose PyPI wheel")
    assert "https://download.pytorch.org/whl/cu124" in finding.hint
    assert finding.source.startswith("torch 2.15.0 Requires-Dist cuda-toolkit[")
    assert finding.candidates == ((Change(package="torch", specifier="==2.6.0"),),)


@pytest.mark.parametrize(
    ("torch", "cuda", "bad"),
    [  # offline: no Requires-Dist recorded for these, so builder/data/torch_tables.yaml answers
        ("2.14.1", "13.0", False),
        ("2.15.0", "13.0", True),  # CUDA 13.2: a newer minor than the base's
        ("2.15.0", "13.2", False),
        ("2.15.0", "12.8", True),
        ("2.15.3", "12.8", True),  # a patch release the table has not seen: its minor's row
    ],
)
def test_torch_releases_past_2_13_are_cuda_checked_from_the_generated_table(
    tmp_path: Path, torch: str, cuda: str, bad: bool
) -> None:
    ctx = context(
        tmp_path, {"torch": torch}, base=f"{{image: img, python: '3.11', cuda: '{cuda}'}}"
    )
    found = list(rule_cuda(ctx))
    assert codes(found) == ([("cuda-mismatch", "torch")] if bad else [])
    assert all("torch_tables.yaml" in f.source for f in found)


def test_on_a_cuda_13_0_base_the_hint_names_the_newest_torch_built_for_13_0(
    tmp_path: Path,
) -> None:
    ctx = context(tmp_path, {"torch": "2.6.0"}, base="{image: img, python: '3.11', cuda: '13.0'}")
    (finding,) = rule_cuda(ctx)
    assert "use torch==2.14.1 " in finding.hint


@pytest.mark.parametrize(
    ("image", "severity", "says"),
    [
        ("nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04", "error", "no nvcc: nvidia/cuda:12.4.1"),
        ("nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04", "warning", "--no-build-isolation"),
        ("runpod/pytorch:2.4.0-py3.10-cuda12.4.1-devel-ubuntu22.04", "warning", "slow"),
        ("pytorch/pytorch:2.4.1-cuda12.4-cudnn9-runtime", "error", "cudnn9-devel (nvcc)"),
        ("img", "error", "neither -devel nor -runtime"),
    ],
)
def test_a_cuda_extension_sdist_is_an_error_without_nvcc_and_a_warning_on_a_devel_base(
    tmp_path: Path, image: str, severity: str, says: str
) -> None:
    base = f"{{image: '{image}', python: '3.10', cuda: '12.4'}}"
    (finding,) = rule_wheels(context(tmp_path, {"flash-attn": "2.8.3"}, base=base))
    assert (finding.severity, finding.code) == (severity, "needs-build")
    assert says in finding.message + finding.hint


def test_a_devel_base_warning_says_how_to_build_against_the_installed_torch(
    tmp_path: Path,
) -> None:
    base = "{image: 'nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04', python: '3.10', cuda: '12.4'}"
    (finding,) = rule_wheels(context(tmp_path, {"flash-attn": "2.8.3"}, base=base))
    assert "needs torch at build time" in finding.message
    assert "pip install --no-build-isolation flash-attn==2.8.3" in finding.hint
    assert "indexes.wheelhouse" in finding.hint


@pytest.mark.parametrize(
    ("base", "severity"),
    [
        ("{image: img, python: '3.10', cuda: '12.4'}", "error"),
        ("{image: img, python: '3.10', cuda: '12.4', apt: [build-essential]}", "warning"),
        ("{image: img, python: '3.10', cuda: '12.4', apt: [g++]}", "warning"),
        (
            "{image: 'nvidia/cuda:12.4.1-devel-ubuntu22.04', python: '3.10', cuda: '12.4'}",
            "warning",
        ),
        ("{image: 'python:3.10', python: '3.10', cuda: null}", "warning"),  # gcc in the image
        ("{image: 'python:3.10-slim', python: '3.10', cuda: null}", "error"),
    ],
)
def test_a_c_extension_sdist_is_a_warning_where_the_base_or_its_apt_list_has_a_compiler(
    tmp_path: Path, base: str, severity: str
) -> None:
    (finding,) = rule_wheels(context(tmp_path, {"pyworld": "0.3.5"}, base=base))
    assert (finding.severity, finding.code, finding.package) == (severity, "needs-build", "pyworld")
    if severity == "error":
        assert "build-essential" in finding.hint


def test_a_project_with_per_cuda_wheels_elsewhere_is_taken_for_a_cuda_extension(
    tmp_path: Path,
) -> None:
    files = {
        "fused-ops": ("fused_ops-1.0.tar.gz", "fused_ops-0.9+cu121-cp310-cp310-linux_x86_64.whl")
    }
    ctx = replace(context(tmp_path, {"fused-ops": "1.0"}), metadata=FakeMetadata(files=files))
    (finding,) = rule_wheels(ctx)
    assert (finding.severity, finding.code) == ("error", "needs-build")
    assert "no nvcc known" in finding.message


# ---------------------------------------------------------------- the metadata cache


PAGE = json.dumps(
    {
        "files": [
            {
                "filename": "demo-1.0-py3-none-any.whl",
                "url": "../../files/demo-1.0-py3-none-any.whl",
                "requires-python": ">=3.8",
                "yanked": False,
            },
            {
                "filename": "demo-2.0.tar.gz",
                "url": "https://files.example/demo-2.0.tar.gz",
                "requires-python": ">=3.12",
                "yanked": "broken",
            },
        ]
    }
).encode()
CORE = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\nRequires-Dist: tokenizers<0.22,>=0.21\n"


class FakeIndex:
    """A `Fetch` answering from a dict, counting what it was asked."""

    def __init__(self, pages: Mapping[str, tuple[bytes, str] | None]) -> None:
        self.pages = pages
        self.asked: list[str] = []

    def __call__(self, url: str, accept: str) -> tuple[bytes, str] | None:
        self.asked.append(url)
        if url not in self.pages:
            raise MetadataError(f"{url}: unreachable")
        return self.pages[url]


def test_a_project_page_is_fetched_once_then_read_from_the_cache(tmp_path: Path) -> None:
    fetch = FakeIndex(
        {
            "https://index.example/simple/demo/": (PAGE, "application/vnd.pypi.simple.v1+json"),
            "https://index.example/files/demo-1.0-py3-none-any.whl.metadata": (CORE, "text/plain"),
        }
    )
    index = IndexCache("https://index.example/simple/", tmp_path, fetch)
    project = index.project("Demo")
    assert project is not None and list(project.releases) == [Version("1.0"), Version("2.0")]
    assert project.highest(SpecifierSet(), "3.10") == Version("1.0")  # 2.0: yanked, Python 3.12
    assert index.requires_dist("demo", Version("1.0")) == ("tokenizers<0.22,>=0.21",)
    again = IndexCache("https://index.example/simple/", tmp_path, None)  # offline, a new run
    assert again.project("demo") == project
    assert again.requires_dist("demo", Version("1.0")) == ("tokenizers<0.22,>=0.21",)
    assert len(fetch.asked) == 2
    assert sorted(p.name for p in (tmp_path / "index.example-simple").iterdir()) == [
        "demo",
        "demo.json",
        "demo.urls.json",
    ]


def test_an_absent_project_is_cached_as_absent(tmp_path: Path) -> None:
    fetch = FakeIndex({"https://index.example/simple/nope/": None})
    assert IndexCache("https://index.example/simple/", tmp_path, fetch).project("nope") is None
    assert IndexCache("https://index.example/simple/", tmp_path, fetch).project("nope") is None
    assert len(fetch.asked) == 1


def test_a_pep_503_html_page_is_read_too(tmp_path: Path) -> None:
    html = (
        b'<a href="/f/demo-1.0-cp310-cp310-manylinux_2_28_x86_64.whl#sha256=00" '
        b'data-requires-python="&gt;=3.10">demo-1.0-cp310-cp310-manylinux_2_28_x86_64.whl</a>'
        b'<a href="/f/demo-0.9.tar.gz" data-yanked="">demo-0.9.tar.gz</a>'
    )
    fetch = FakeIndex({"https://index.example/simple/demo/": (html, "text/html")})
    project = IndexCache("https://index.example/simple/", tmp_path, fetch).project("demo")
    assert project is not None
    assert [(f.filename, f.requires_python, f.yanked) for f in project.files] == [
        ("demo-1.0-cp310-cp310-manylinux_2_28_x86_64.whl", ">=3.10", False),
        ("demo-0.9.tar.gz", None, True),
    ]


def test_an_unreachable_index_is_given_up_after_three_failures(tmp_path: Path) -> None:
    fetch = FakeIndex({})
    index = IndexCache("https://index.example/simple/", tmp_path, fetch)
    assert [index.project(n) for n in ("a", "b", "c", "d", "e")] == [None] * 5
    assert len(fetch.asked) == 3 and len(index.errors) == 3
    assert list(tmp_path.iterdir()) == []  # failures are not cached


def test_an_unreachable_index_is_its_own_finding_not_a_conflict() -> None:
    from builder.check.resolution import _unresolved
    from builder.matrix import parse_matrix

    text = (
        'version: 1\nbases: {b: {image: x, python: "3.11"}}\naxes: {base: [b], torch: ["2.4.1"]}\n'
    )
    cell = parse_matrix(text, Path("matrix.yaml")).cells[0]
    error = (
        "error: Request failed after 3 retries\n  Caused by: Failed to fetch: "
        "`https://download.pytorch.org/whl/cu118/torchvision/`\n"
        "  Caused by: failed to lookup address information: Name or service not known"
    )
    resolved = _unresolved(cell, error, "matrix.yaml:3")
    assert [f.code for f in resolved.findings] == ["index-unreachable"]
    assert "download.pytorch.org/whl/cu118/torchvision/" in resolved.findings[0].message
    assert str(resolved.versions["torch"]) == "2.4.1"


def test_an_offline_cache_miss_is_not_a_conflict_and_is_not_cached(tmp_path: Path) -> None:
    matrix = load_matrix(FIXTURES / "check" / "peft-missing" / "matrix.yaml")
    cell = matrix.cells[0]
    calls = []

    def offline_uv(cell: Cell, settings: Settings, offline: bool) -> Resolution:
        calls.append(offline)
        error = (
            "Because torch was not found in the cache and you require torch, we can conclude "
            "that your requirements are unsatisfiable."
        )
        return Resolution(ok=False, error=error)

    options = Options(settings=Settings(metadata_cache=tmp_path), offline=True, resolver=offline_uv)
    for _ in range(2):
        (report,) = check_cells(matrix, [cell], options)
        assert [f.code for f in report.findings][:1] == ["index-unreachable"]
        assert "without --offline" in report.findings[0].hint
    assert calls == [True, True]  # asked again: a cache miss is never stored as a verdict
