"""scripts/gen_torch_tables.py and what it writes: builder/data/torch_tables.yaml (torch -> CUDA,
torchvision / torchaudio -> torch), read by `check` through known_issues.py. The script runs
here against a fake PyPI: a JSON API, PEP 658 metadata, and a wheel served by byte ranges."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from builder.check.known_issues import TORCH_TABLES, load_known_issues
from tests.conftest import ROOT

INDEX = "https://pypi.example"
CUDA_13_2 = (
    "cuda-toolkit[cublas,cudart,cufft,cufile,cupti,cusolver,cusparse,nvjitlink,nvrtc,nvtx]"
    '==13.2.2; platform_system == "Linux"'
)
CUDA_12_4 = (
    'nvidia-cuda-runtime-cu12 (==12.4.127) ; platform_system == "Linux" and '
    'platform_machine == "x86_64"'
)


def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_torch_tables", ROOT / "scripts/gen_torch_tables.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


GEN = script()


def metadata(name: str, version: str, *requires: str) -> bytes:
    lines = [f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"]
    lines += [f"Requires-Dist: {r}\n" for r in requires]
    return "".join(lines).encode()


def wheel_bytes(name: str, version: str, *requires: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{name}/__init__.py", "x = 1\n" * 5000)
        archive.writestr(f"{name}-{version}.dist-info/METADATA", metadata(name, version, *requires))
    return buffer.getvalue()


class FakePyPI:
    """JSON API pages, `.metadata` files and wheels (answered only by byte ranges)."""

    def __init__(self, releases: Mapping[str, Mapping[str, tuple[str, ...]]], pep658: bool) -> None:
        self.pages: dict[str, bytes] = {}
        self.files: dict[str, bytes] = {}
        self.ranges: list[str] = []
        for name, versions in releases.items():
            entries: dict[str, list[dict[str, Any]]] = {}
            for version, requires in versions.items():
                filename = f"{name}-{version}-cp312-cp312-manylinux_2_28_x86_64.whl"
                url = f"https://files.example/{filename}"
                entries[version] = [{"filename": filename, "url": url, "yanked": False}]
                self.files[url] = wheel_bytes(name, version, *requires)
                if pep658:
                    self.pages[f"{url}.metadata"] = metadata(name, version, *requires)
            self.pages[f"{INDEX}/pypi/{name}/json"] = json.dumps({"releases": entries}).encode()

    def fetch(self, url: str, accept: str) -> tuple[bytes, str] | None:
        return (self.pages[url], "application/json") if url in self.pages else None

    def ranged(self, url: str, byte_range: str) -> tuple[bytes, str] | None:
        self.ranges.append(byte_range)
        body = self.files[url]
        if match := re.fullmatch(r"bytes=-(\d+)", byte_range):
            start = max(0, len(body) - int(match[1]))
            end = len(body) - 1
        else:
            low, high = byte_range.removeprefix("bytes=").split("-")
            start, end = int(low), int(high)
        return body[start : end + 1], f"bytes {start}-{end}/{len(body)}"


RELEASES = {
    "torch": {"2.6.0": (CUDA_12_4, "filelock"), "2.15.0": (CUDA_13_2, "filelock")},
    "torchvision": {"0.21.0": ("torch (==2.6.0)",), "0.29.2": ("torch (>=2.14.0)",)},
    "torchaudio": {"2.6.0": ("torch==2.6.0",), "2.11.0": ()},
}


def generate(pypi: FakePyPI, output: Path, today: str = "2026-12-01") -> bool:
    written: bool = GEN.generate(pypi.fetch, pypi.ranged, output, INDEX, False, today)
    return written


def test_each_torch_release_gets_the_cuda_its_wheel_declares_with_its_source(
    tmp_path: Path,
) -> None:
    output = tmp_path / "tables.yaml"
    assert generate(FakePyPI(RELEASES, pep658=True), output)
    data = yaml.safe_load(output.read_text())
    assert data["generated"] == "2026-12-01"
    assert data["torch_cuda"]["2.15.0"] == {
        "cuda": "13.2",
        "declared": CUDA_13_2,
        "source": "torch-2.15.0-cp312-cp312-manylinux_2_28_x86_64.whl core metadata (PEP 658)",
    }
    assert data["torch_cuda"]["2.6.0"]["cuda"] == "12.4"
    assert data["torchvision"]["0.29.2"]["torch"] == ">=2.14.0"
    assert data["torchaudio"]["2.11.0"]["torch"] is None  # it names no torch


def test_without_pep_658_metadata_the_wheel_is_read_by_ranges_not_downloaded(
    tmp_path: Path,
) -> None:
    pypi = FakePyPI(RELEASES, pep658=False)
    output = tmp_path / "tables.yaml"
    generate(pypi, output)
    row = yaml.safe_load(output.read_text())["torch_cuda"]["2.15.0"]
    assert row["cuda"] == "13.2"
    assert row["source"].endswith("METADATA (HTTP range requests)")
    assert pypi.ranges and all(r.startswith("bytes=") for r in pypi.ranges)


def test_a_table_with_fewer_rows_than_the_committed_one_is_refused(tmp_path: Path) -> None:
    output = tmp_path / "tables.yaml"
    generate(FakePyPI(RELEASES, pep658=True), output)
    before = output.read_text()
    fewer = {**RELEASES, "torch": {"2.15.0": RELEASES["torch"]["2.15.0"]}}
    with pytest.raises(GEN.Refused, match="torch_cuda: 1 rows, the committed table has 2"):
        generate(FakePyPI(fewer, pep658=True), output)
    assert output.read_text() == before


def test_unchanged_rows_leave_the_file_and_its_date_alone(tmp_path: Path) -> None:
    output = tmp_path / "tables.yaml"
    generate(FakePyPI(RELEASES, pep658=True), output)
    before = output.read_text()
    # read by ranges this time: another source, the same facts
    assert not generate(FakePyPI(RELEASES, pep658=False), output, today="2026-12-08")
    assert output.read_text() == before


def test_a_new_release_whose_metadata_cannot_be_read_fails_the_run(tmp_path: Path) -> None:
    pypi = FakePyPI(RELEASES, pep658=False)
    pypi.files = {url: b"not a zip" for url in pypi.files}
    with pytest.raises(GEN.Refused, match="no metadata could be read"):
        generate(pypi, tmp_path / "tables.yaml")
    assert not (tmp_path / "tables.yaml").exists()


# ---------------------------------------------------------------- the committed tables


def committed() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(TORCH_TABLES.read_text())
    return data


def test_the_committed_tables_reach_torch_2_15_and_every_row_names_its_source() -> None:
    data = committed()
    torch = data["torch_cuda"]
    assert Version(list(torch)[-1]) >= Version("2.15.0")
    assert torch["2.15.0"]["cuda"] == "13.2"  # cuda-toolkit==13.2.2
    assert torch["2.14.1"]["cuda"] == "13.0"
    assert torch["2.10.0"]["cuda"] == "12.8"  # the last nvidia-cuda-runtime-cu12 pin
    for key in ("torch_cuda", "torchvision", "torchaudio"):
        rows = data[key]
        assert list(rows) == sorted(rows, key=Version), key
        assert all(row["source"] for row in rows.values()), key


def test_the_companion_tables_come_from_each_releases_torch_requirement() -> None:
    data = committed()
    for release, row in data["torchvision"].items():
        if row["torch"] and row["torch"].startswith("=="):
            torch = Version(row["torch"][2:])
            assert torch in SpecifierSet(row["torch"]), release
    issues = load_known_issues()
    assert issues.companions["torchvision"]["2.4"] == "0.19"
    assert issues.companions["torchvision"]["2.14"] == "0.29"  # 0.29.0 pins torch==2.14.0
    assert issues.companions["torchaudio"]["2.11"] == "2.11"  # 2.11.1: torch>=2.11
    assert "2.15" not in issues.companions["torchvision"]  # 0.29.1 on: torch>=2.14.0, unpinned
    assert issues.torch_cuda["2.15"] == "13.2"
    assert (
        "generated" in issues.torch_cuda_source and "gen_torch_tables" in issues.companions_source
    )


def test_a_patch_release_newer_than_the_table_falls_back_to_its_minor() -> None:
    issues = load_known_issues()
    build = issues.torch_build(Version("2.6.9"))
    assert build is not None and build.cuda == "12.4"
    assert issues.torch_build(Version("2.99.0")) is None


# ---------------------------------------------------------------- the weekly workflow


def test_the_weekly_workflow_runs_the_script_and_opens_a_pull_request() -> None:
    workflow = yaml.safe_load((ROOT / ".github/workflows/torch-tables.yml").read_text())
    on = workflow.get("on", workflow.get(True))
    assert set(on) == {"schedule", "workflow_dispatch"}
    text = yaml.safe_dump(workflow["jobs"]["tables"]["steps"], width=1000)
    assert "python scripts/gen_torch_tables.py -o builder/data/torch_tables.yaml" in text
    assert "peter-evans/create-pull-request@v7" in text
    assert "add-paths: builder/data/torch_tables.yaml" in text
