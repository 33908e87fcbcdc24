"""`builder validate` for real: cells built on the Docker engine (and a venv), probed, judged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from xml.etree import ElementTree

import pytest

from builder.report import load_report
from builder.resources import GENERATE_VARIANTS
from tests.conftest import FIXTURES, ROOT, SYSTEM_CA, WHEELS, run_cli
from tests.integration.test_report_browser import Dom, browse

pytestmark = [pytest.mark.docker, pytest.mark.network, pytest.mark.slow]

SMALL = """version: 1
bases:
  bookworm: {{image: "{base}", python: "3.11"}}
axes:
  base: [bookworm]
  six: {six}
requirements: {requirements}
indexes: {{ca_bundle: {ca}}}
probes: {probes}
{extra}
"""
VARIANTS = list(GENERATE_VARIANTS)


def small(
    project: Path,
    base: str,
    *,
    six: str = '["1.16.0"]',
    requirements: str = '["numpy<2"]',
    probes: str = "[imports, numpy, pip-check, lock-match]",
    extra: str = "",
) -> Path:
    project.mkdir(parents=True, exist_ok=True)
    (project / "matrix.yaml").write_text(
        SMALL.format(
            base=base, six=six, requirements=requirements, ca=SYSTEM_CA, probes=probes, extra=extra
        )
    )
    return project


def validate(project: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict]:
    """Run validate; its report must validate against the shipped schema."""
    result = run_cli(
        "validate", "-o", "reports", "--cache-dir", "cache", *args, cwd=project, env=env
    )
    path = project / "reports" / "report.json"
    load_report(path)
    return result.code, json.loads(path.read_text())


def probes_of(cell: dict) -> dict[str, dict]:
    return {p["probe"]: p for p in cell["probes"]}


@pytest.fixture(scope="module")
def wan_cpu(tmp_path_factory: pytest.TempPathFactory, base_image: str) -> Path:
    if not any(WHEELS.glob("torch-2.13.0*.whl")):
        pytest.fail(f"the CPU torch wheel is missing from {WHEELS}")
    project = tmp_path_factory.mktemp("wan")
    text = (ROOT / "examples" / "wan-cpu" / "matrix.yaml").read_text()
    text = text.replace("builder-test-base:bookworm", base_image).replace(
        "/opt/wheels", str(WHEELS)
    )
    text += (
        "probes: {imports: null, numpy: null, pip-check: null, lock-match: null, cuda: null, "
        f"media: null, generate: {{variants: {json.dumps(VARIANTS)}}}}}\n"
    )
    (project / "matrix.yaml").write_text(text)
    return project


def test_the_good_wan_cell_passes_every_probe_in_its_image(wan_cpu: Path) -> None:
    code, report = validate(wan_cpu)
    cell = report["cells"][0]
    assert code == 0, cell["reason"]
    probes = probes_of(cell)
    assert set(probes) == {
        "imports",
        "numpy",
        "pip-check",
        "lock-match",
        "cuda",
        "media",
        "generate",
    }
    assert probes["cuda"]["status"] == "skipped" and "no GPU" in probes["cuda"]["reason"]
    assert all(p["status"] == "pass" for n, p in probes.items() if n != "cuda")
    variants = probes["generate"]["details"]["variants"]
    assert {name for name, v in variants.items() if v["status"] == "pass"} >= {
        "wan2.1",
        "multitalk-audio",
    }
    assert all(v["status"] in ("pass", "skipped") for v in variants.values())
    assert cell["build"]["size"] > 0 and cell["lock"]["preinstalled"] == "isolated"


def test_the_same_cell_passes_the_same_probes_with_the_venv_engine(wan_cpu: Path) -> None:
    code, report = validate(wan_cpu, "--engine", "venv")
    cell = report["cells"][0]
    assert code == 0, cell["reason"]
    assert report["run"]["engine"] == "venv" and cell["build"] is None
    assert {n: p["status"] for n, p in probes_of(cell).items()} == {
        "imports": "pass",
        "numpy": "pass",
        "pip-check": "pass",
        "lock-match": "pass",
        "cuda": "skipped",
        "media": "pass",
        "generate": "pass",
    }


def test_an_app_that_imports_peft_fails_imports_as_a_missing_module(
    tmp_path: Path, base_image: str
) -> None:
    project = small(
        tmp_path / "p", base_image, extra="app: {path: app, entry_modules: [uses_peft]}"
    )
    shutil.copytree(FIXTURES / "apps" / "peft_app", project / "app")
    code, report = validate(project)
    imports = probes_of(report["cells"][0])["imports"]
    assert code == 1 and imports["status"] == "fail"
    failed = [m for m in imports["details"]["modules"] if m["status"] != "pass"]
    assert [(m["module"], m["class"]) for m in failed] == [("uses_peft", "missing-module")]
    assert "No module named 'peft'" in failed[0]["error"]


def test_an_app_that_needs_a_gpu_at_import_is_classified_as_such(
    tmp_path: Path, base_image: str
) -> None:
    project = small(tmp_path / "p", base_image, extra="app: {path: app, entry_modules: [t5ish]}")
    shutil.copytree(FIXTURES / "apps" / "gpu_app", project / "app")
    code, report = validate(project)
    modules = probes_of(report["cells"][0])["imports"]["details"]["modules"]
    failed = [m for m in modules if m["status"] != "pass"]
    assert code == 1 and [(m["module"], m["class"]) for m in failed] == [("t5ish", "gpu-at-import")]


def test_numpy_2_in_a_cell_that_demands_numpy_below_2_fails_numpy(
    tmp_path: Path, base_image: str
) -> None:
    project = small(
        tmp_path / "p",
        base_image,
        requirements='["numpy>=2"]',
        probes='{numpy: {numpy_spec: "<2,>=1.23.5"}, lock-match: null}',
    )
    code, report = validate(project)
    probes = probes_of(report["cells"][0])
    assert code == 1 and probes["numpy"]["status"] == "fail"
    assert probes["lock-match"]["status"] == "pass"


def test_a_probe_over_its_memory_or_time_limit_is_an_error_and_the_others_still_report(
    tmp_path: Path, base_image: str
) -> None:
    probes = '{numpy: {memory: "8m"}, imports: {timeout: 0.05}, pip-check: null, lock-match: null}'
    project = small(tmp_path / "p", base_image, probes=probes)
    code, report = validate(project)
    cell = report["cells"][0]
    found = probes_of(cell)
    assert code == 1 and cell["status"] == "error"
    assert found["numpy"]["status"] == "error"
    assert "memory" in found["numpy"]["reason"] or "137" in found["numpy"]["reason"]
    assert (found["imports"]["status"], found["imports"]["reason"]) == (
        "error",
        "timeout after 0.05s",
    )
    assert found["pip-check"]["status"] == found["lock-match"]["status"] == "pass"


def test_an_unchanged_matrix_is_reused_from_the_cache_and_a_bump_revalidates_one_cell(
    tmp_path: Path, base_image: str
) -> None:
    project = small(tmp_path / "p", base_image, six='["1.16.0", "1.17.0"]')
    summary = tmp_path / "summary.md"
    code, first = validate(project, env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert code == 0 and [c["cache"]["hit"] for c in first["cells"]] == [False, False]
    assert "bookworm" in summary.read_text() and "pass" in summary.read_text()
    logs = sorted((project / "reports" / "build").glob("*.build.log"))
    stamps = [p.stat().st_mtime_ns for p in logs]
    code, second = validate(project)
    assert code == 0 and [c["cache"]["hit"] for c in second["cells"]] == [True, True]
    assert [p.stat().st_mtime_ns for p in logs] == stamps, "a cached cell was rebuilt"
    matrix = project / "matrix.yaml"
    matrix.write_text(matrix.read_text().replace('"1.17.0"', '"1.15.0"'))
    assert run_cli("lock", cwd=project).code == 0
    code, third = validate(project)
    assert code == 0
    assert {c["id"]: c["cache"]["hit"] for c in third["cells"]} == {
        "bookworm.six-1.16.0": True,
        "bookworm.six-1.15.0": False,
    }


def test_a_cell_with_check_errors_is_not_built_unless_asked(
    tmp_path: Path, base_image: str
) -> None:
    profiles = tmp_path / "p" / "profiles"
    profiles.mkdir(parents=True)
    (profiles / "needs-peft.yaml").write_text(
        "name: needs-peft\nsource: test\nrequirements:\n"
        "  - {requirement: peft, source: the model imports peft}\n"
    )
    extra = "profiles: [needs-peft]\nprofile_paths: [profiles]"
    project = small(tmp_path / "p", base_image, extra=extra)
    code, report = validate(project)
    cell = report["cells"][0]
    assert code == 1 and cell["build"] is None and cell["probes"] == []
    assert cell["reason"].startswith("check: profile-missing-package peft")
    code, report = validate(project, "--build-anyway")
    assert report["cells"][0]["build"]["ok"] is True


def test_the_model_dir_probe_inspects_a_mounted_model_inside_the_image(
    tmp_path: Path, base_image: str
) -> None:
    from tests.unit.test_inspect import diffusers_model

    project = small(tmp_path / "p", base_image, probes="{model-dir: {model_dir: model}}")
    diffusers_model(project / "model", experts=2, boundary=0.875)
    code, report = validate(project)
    probe = probes_of(report["cells"][0])["model-dir"]
    assert code == 0, probe
    details = probe["details"]
    assert (details["layout"], details["experts"], details["model_dir"]) == (
        "diffusers",
        2,
        "/builder/model",
    )
    assert details["pipeline"] == "WanPipeline"


def test_a_real_report_renders_in_every_format_and_filters_in_chromium(
    tmp_path: Path, base_image: str, chromium: str
) -> None:
    project = small(
        tmp_path / "p",
        base_image,
        six='["1.16.0"]',
        requirements="[]",
        probes='{numpy: {numpy_spec: "<2"}, lock-match: null}',
        extra='include:\n  - {numpy: "1.26.4"}\n  - {base: bookworm, six: "1.17.0", numpy: "2.1.0"}',
    )
    code, report = validate(project)
    assert code == 1 and [c["status"] for c in report["cells"]] == ["pass", "fail"]
    out = project / "reports"
    for fmt in ("md", "html", "junit", "json"):
        assert (
            run_cli(
                "report", str(out / "report.json"), "--format", fmt, "-o", str(out / f"r.{fmt}")
            ).code
            == 0
        )
    assert "numpy" in (out / "r.md").read_text()
    cases = ElementTree.parse(out / "r.junit").getroot().iter("testcase")
    assert {(c.get("classname"), c.get("name")) for c in cases} >= {
        ("bookworm.six-1.17.0.numpy-2.1.0", "numpy"),
        ("bookworm.six-1.16.0.numpy-1.26.4", "numpy"),
    }
    dom = Dom(
        browse(
            chromium, (out / "r.html").as_uri() + "#status=fail", tmp_path / "profile", "--dump-dom"
        )
    )
    assert dom.visible("details") == ["bookworm.six-1.17.0.numpy-2.1.0"]
