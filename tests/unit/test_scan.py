"""`builder scan`: static import graph, reach, distributions, requirements, output.

Resolutions are faked here (a recorded `uv pip compile` output and the import names each
wheel provides); tests/unit/test_scan_accuracy.py holds the fixture repositories with a known
truth, tests/integration/test_scan_real.py the real uv.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import stat
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from builder.cli import main
from builder.errors import InputError
from builder.matrix import Indexes
from builder.scan import (
    Environment,
    Reach,
    ScanOptions,
    Sources,
    current_environment,
    parse_resolution,
    read_requirements,
    render,
    render_profile_draft,
    scan,
    write_profile_draft,
)
from builder.scan.model import ResolutionInfo
from builder.scan.resolve import Resolved
from tests.conftest import run_cli

FIXTURES = Path(__file__).parent.parent / "fixtures"
REPO = FIXTURES / "scan_repo"
EXPECTED = FIXTURES / "scan_expected"
STDLIB = frozenset(sys.stdlib_module_names)
ENV = Environment(version="3.11", stdlib=STDLIB)

# What uv answers for scan_repo's requirements, trimmed: diffusers brings huggingface-hub,
# which brings tqdm; pillow and numpy are declared and needed by others too.
REPO_RESOLUTION = """\
diffusers==0.35.1
    # via -r requirements.in
gradio==5.0.0
    # via -r requirements.in
huggingface-hub==0.35.0
    # via
    #   diffusers
    #   gradio
numpy==1.26.4
    # via
    #   -r requirements.in
    #   diffusers
opencv-python-headless==4.10.0.84
    # via -r requirements.in
optimum-quanto==0.2.6
    # via -r requirements.in
pandas==2.2.3
    # via gradio
pillow==11.0.0
    # via
    #   -r requirements.in
    #   diffusers
pyyaml==6.0.2
    # via -r requirements.in
torch==2.4.0
    # via
    #   -r requirements.in
    #   optimum-quanto
tqdm==4.67.1
    # via huggingface-hub
"""
REPO_MODULES: dict[str, tuple[str, ...] | None] = {
    "diffusers": ("diffusers",),
    "gradio": ("gradio",),
    "huggingface-hub": ("huggingface_hub",),
    "numpy": ("numpy",),
    "opencv-python-headless": ("cv2",),
    "optimum-quanto": ("optimum.quanto",),
    "pandas": ("pandas",),
    "pillow": ("PIL",),
    "pyyaml": ("_yaml", "yaml"),
    "torch": ("functorch", "torch", "torchgen"),
    "tqdm": ("tqdm",),
}


class Recorded:
    """A resolver and wheel index that answer with what was recorded (and say what they were
    asked)."""

    def __init__(self, body: str, modules: Mapping[str, tuple[str, ...] | None]) -> None:
        self.body, self.known = body, dict(modules)
        self.asked: list[tuple[tuple[str, ...], str, str, Indexes | None]] = []

    def resolve(
        self,
        requirements: Sequence[str],
        python: str,
        platform: str,
        indexes: Indexes | None = None,
    ) -> Resolved:
        self.asked.append((tuple(requirements), python, platform, indexes))
        graph = parse_resolution(self.body)
        info = ResolutionInfo(True, len(graph.pins), "uv", python, platform)
        return Resolved(info, graph, self.body)

    def modules(self, pins: Mapping[str, str]) -> dict[str, tuple[str, ...] | None]:
        return {name: self.known.get(name) for name in pins}


def recorded(body: str = REPO_RESOLUTION, modules: Mapping[str, Any] | None = None) -> Sources:
    fake = Recorded(body, REPO_MODULES if modules is None else modules)
    return Sources(fake, fake)


def golden(name: str) -> str:
    return (EXPECTED / name).read_text().replace("@REPO@", str(REPO))


def scan_fixture() -> ScanOptions:
    return ScanOptions(path=REPO, requirements=(REPO / "requirements.txt",), python="3.11")


def scan_repo() -> Any:
    return scan(scan_fixture(), ENV, recorded())


def write_repo(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def scan_files(tmp_path: Path, files: dict[str, str], **options: Any) -> Any:
    return scan(ScanOptions(path=write_repo(tmp_path, files), **options), ENV)


def test_the_fixture_repository_scans_to_the_golden_text_report() -> None:
    assert render(scan_repo(), "text") + "\n" == golden("report.txt")


def test_the_fixture_repository_scans_to_the_golden_json_report() -> None:
    assert json.loads(render(scan_repo(), "json")) == json.loads(golden("report.json"))


def test_every_text_line_is_at_most_100_characters_with_3_locations_per_import(
    tmp_path: Path,
) -> None:
    files = {f"pkg/mod{n:02}.py": "import torch\nimport cv2\n" for n in range(80)}
    entry = "".join(f"import pkg.mod{n:02}\n" for n in range(80))
    long_name = "a_really_long_module_name_" * 3
    files |= {"app.py": entry + f"import {long_name}\n", "pkg/__init__.py": ""}
    text = render(scan_files(tmp_path, files), "text")
    assert max(map(len, text.splitlines())) <= 100
    [row] = [line for line in text.splitlines() if line.startswith("  torch ")]
    assert row.endswith("  pkg/mod00.py:1, pkg/mod01.py:1, pkg/mod02.py:1, +77 more")
    assert "  pkg/ (81): __init__.py, mod00.py, mod01.py," in text


def test_guessed_mappings_are_marked_in_text_and_json(tmp_path: Path) -> None:
    report = scan_files(tmp_path, {"app.py": "import cv2\nimport PIL\n"})
    assert [(t.name, t.source, t.guessed) for t in report.third_party] == [
        ("cv2", "table", True),
        ("PIL", "table", True),
    ]
    assert "opencv-python | opencv-python-headless (ambiguous, guessed)" in render(report, "text")
    assert json.loads(render(report, "json"))["third_party"][0]["guessed"] is True


def test_the_strongest_reach_wins_and_every_location_is_kept() -> None:
    torch = next(item for item in scan_repo().third_party if item.name == "torch")
    assert torch.reach is Reach.MODULE
    assert [(loc.file, loc.line, loc.reach) for loc in torch.locations] == [
        ("app.py", 9, Reach.MODULE),
        ("pkg/layers.py", 15, Reach.LAZY),
        ("src/vram_management/layers.py", 1, Reach.MODULE),
    ]


def test_lazy_beats_optional_when_a_module_is_reached_both_ways(tmp_path: Path) -> None:
    source = (
        "try:\n    import rich\nexcept ImportError:\n    rich = None\n\ndef f():\n    import rich\n"
    )
    report = scan_files(tmp_path, {"app.py": source})
    assert [(item.name, item.reach) for item in report.third_party] == [("rich", Reach.LAZY)]


def test_a_try_around_a_def_does_not_make_the_body_imports_optional(tmp_path: Path) -> None:
    source = "try:\n    def f():\n        import rich\nexcept ImportError:\n    pass\n"
    assert scan_files(tmp_path, {"app.py": source}).third_party[0].reach is Reach.LAZY


def test_a_try_that_does_not_catch_import_errors_leaves_imports_required(tmp_path: Path) -> None:
    source = "try:\n    import rich\nexcept KeyError:\n    pass\n"
    assert scan_files(tmp_path, {"app.py": source}).third_party[0].reach is Reach.MODULE


def test_imports_under_type_checking_are_guarded_and_its_else_branch_is_not(
    tmp_path: Path,
) -> None:
    source = "import typing\nif typing.TYPE_CHECKING:\n    import pandas\nelse:\n    import rich\n"
    report = scan_files(tmp_path, {"app.py": source})
    assert [(t.name, t.reach) for t in report.third_party] == [
        ("pandas", Reach.GUARDED),
        ("rich", Reach.MODULE),
    ]


@pytest.mark.parametrize(
    ("test", "python", "taken"),
    [
        ("sys.version_info >= (3, 11)", "3.11", True),
        ("sys.version_info >= (3, 11)", "3.10", False),
        ("sys.version_info[:2] < (3, 12)", "3.11", True),
        ("sys.version_info.minor == 10", "3.11", False),
        ('sys.platform == "win32"', "3.11", False),
        ('sys.platform.startswith("linux")', "3.11", True),
        ('os.name == "nt" or sys.version_info < (3, 8)', "3.11", False),
        ('platform.system() != "Windows"', "3.11", True),
    ],
)
def test_version_and_platform_branches_are_evaluated_for_the_target(
    tmp_path: Path, test: str, python: str, taken: bool
) -> None:
    source = f"import os, platform, sys\nif {test}:\n    import yes\nelse:\n    import no\n"
    report = scan_files(tmp_path, {"app.py": source}, python=python)
    reaches = {t.name: t.reach for t in report.third_party}
    assert reaches == {
        "yes": Reach.MODULE if taken else Reach.GUARDED,
        "no": Reach.GUARDED if taken else Reach.MODULE,
    }


def test_a_branch_the_scan_cannot_decide_keeps_both_imports_at_their_reach(
    tmp_path: Path,
) -> None:
    source = "import os\nif os.environ.get('X'):\n    import yes\nelse:\n    import no\n"
    report = scan_files(tmp_path, {"app.py": source})
    assert {t.reach for t in report.third_party} == {Reach.MODULE}


def test_a_module_level_import_in_a_lazily_imported_local_module_is_lazy(tmp_path: Path) -> None:
    files = {
        "app.py": "import pkg\n",
        "pkg/__init__.py": "from .model import Model\n",
        "pkg/model.py": "class Model:\n    def __init__(self):\n        from . import usp\n",
        "pkg/usp.py": "import xfuser\nfrom . import deeper\n",
        "pkg/deeper.py": "import yunchang\n",
    }
    report = scan_files(tmp_path, files)
    assert {t.name: t.reach for t in report.third_party} == {
        "xfuser": Reach.LAZY,
        "yunchang": Reach.LAZY,
    }


def test_the_strongest_path_to_a_local_module_decides_its_reach(tmp_path: Path) -> None:
    files = {
        "app.py": "import a\nimport b\n",
        "a.py": "def f():\n    import shared\n",
        "b.py": "try:\n    import shared\nexcept ImportError:\n    pass\n",
        "shared.py": "import xfuser\n",
        "c.py": "",
    }
    report = scan_files(tmp_path, files, entries=(Path("app.py"),))
    [xfuser] = report.third_party
    assert (xfuser.reach, xfuser.locations[0].reach) == (Reach.LAZY, Reach.LAZY)


def test_a_module_imported_only_under_an_import_guard_makes_its_imports_optional(
    tmp_path: Path,
) -> None:
    files = {
        "app.py": "try:\n    import fast\nexcept ImportError:\n    fast = None\n",
        "fast.py": "import triton\n",
    }
    [triton] = scan_files(tmp_path, files, entries=(Path("app.py"),)).third_party
    assert triton.reach is Reach.OPTIONAL


def test_a_syntax_error_is_a_finding_with_file_and_line_not_a_crash(tmp_path: Path) -> None:
    report = scan_files(tmp_path, {"app.py": "import lib\n", "lib.py": "x = 1\ndef broken(:\n"})
    assert [(s.file, s.line) for s in report.syntax_errors] == [("lib.py", 2)]
    assert "lib.py:2: " in render(report, "text")


def test_a_relative_import_above_the_repository_root_is_a_missing_local_module(
    tmp_path: Path,
) -> None:
    report = scan_files(
        tmp_path, {"app.py": "import pkg\n", "pkg/__init__.py": "from .. import x\n"}
    )
    [missing] = report.missing_local
    assert (missing.file, missing.line, missing.module) == ("pkg/__init__.py", 1, "..")
    assert missing.reason == "relative import beyond the repository root"


def test_a_submodule_import_resolves_to_its_file(tmp_path: Path) -> None:
    files = {
        "app.py": "from pkg import sub\n",
        "pkg/__init__.py": "",
        "pkg/sub.py": "import rich\n",
    }
    report = scan_files(tmp_path, files)
    assert report.files == ("app.py", "pkg/__init__.py", "pkg/sub.py")
    assert [item.name for item in report.third_party] == ["rich"]


def test_a_name_missing_from_a_namespace_package_is_a_missing_local_module(
    tmp_path: Path,
) -> None:
    report = scan_files(tmp_path, {"app.py": "from ns import here, absent\n", "ns/here.py": ""})
    assert [(m.module, m.reason) for m in report.missing_local] == [
        ("ns", "no module or package at ns/absent")
    ]
    assert report.exit_code == 1


def test_an_import_of_a_missing_submodule_of_a_local_package_is_missing(tmp_path: Path) -> None:
    report = scan_files(tmp_path, {"app.py": "import pkg.gone\n", "pkg/__init__.py": ""})
    assert [m.reason for m in report.missing_local] == ["no module or package at pkg/gone"]


def test_a_dotted_import_into_a_directory_without_python_is_local_and_missing(
    tmp_path: Path,
) -> None:
    files = {"app.py": "from src.audio.model import Model\n", "src/README.md": "later\n"}
    report = scan_files(tmp_path, files)
    assert report.third_party == ()
    assert [(m.module, m.reason) for m in report.missing_local] == [
        ("src.audio.model", "no module or package at src/audio")
    ]
    assert [(p.name, p.namespace) for p in report.local] == [("app", False), ("src", True)]


def test_a_plain_import_of_a_directory_without_python_is_third_party(tmp_path: Path) -> None:
    # a `wandb/` run directory does not shadow the installed wandb
    report = scan_files(tmp_path, {"app.py": "import wandb\n", "wandb/run-1/log.txt": ""})
    assert [t.name for t in report.third_party] == ["wandb"]


def test_the_json_lists_local_packages_and_modules_with_a_namespace_flag(tmp_path: Path) -> None:
    files = {
        "app.py": "import pkg.sub\nimport helpers\nfrom ns import tool\n",
        "pkg/__init__.py": "",
        "pkg/sub.py": "",
        "helpers.py": "",
        "ns/tool.py": "",
    }
    local = json.loads(render(scan_files(tmp_path, files), "json"))["local"]
    assert local == [
        {"name": "app", "path": "app.py", "kind": "module", "namespace": False, "files": 1},
        {"name": "helpers", "path": "helpers.py", "kind": "module", "namespace": False, "files": 1},
        {"name": "ns", "path": "ns", "kind": "package", "namespace": True, "files": 1},
        {"name": "pkg", "path": "pkg", "kind": "package", "namespace": False, "files": 2},
    ]


def test_a_missing_local_module_behind_an_import_guard_does_not_fail_the_scan(
    tmp_path: Path,
) -> None:
    source = "try:\n    from ._speedups import fast\nexcept ImportError:\n    pass\n"
    report = scan_files(tmp_path, {"app.py": "import pkg\n", "pkg/__init__.py": source})
    assert [(m.module, m.reach) for m in report.missing_local] == [("._speedups", Reach.OPTIONAL)]
    assert report.exit_code == 0


def test_a_compiled_extension_module_counts_as_a_local_module(tmp_path: Path) -> None:
    repo = write_repo(
        tmp_path, {"app.py": "from pkg import fast\nimport native\n", "pkg/__init__.py": ""}
    )
    (repo / "pkg" / "fast.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\x7fELF")
    (repo / "native.abi3.so").write_bytes(b"\x7fELF")
    report = scan(ScanOptions(path=repo), ENV)
    assert (report.missing_local, report.third_party) == ((), ())
    assert report.files == ("app.py", "pkg/__init__.py")


# --- GPU at import ------------------------------------------------------------------------------


def gpu_sites(tmp_path: Path, source: str) -> list[tuple[int, str, str]]:
    report = scan_files(tmp_path, {"app.py": "import torch\n" + source})
    return [(g.line - 1, g.call, g.context) for g in report.gpu_at_import]


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("x = torch.cuda.current_device()\n", [(1, "torch.cuda.current_device()", "module level")]),
        (
            "def f(d=torch.cuda.current_device()):\n    pass\n",
            [(1, "torch.cuda.current_device()", "default argument")],
        ),
        (
            "class C:\n    cap = torch.cuda.get_device_capability()\n",
            [(2, "torch.cuda.get_device_capability()", "class body")],
        ),
        (
            "@cache(torch.cuda.get_device_name())\ndef f():\n    pass\n",
            [(1, "torch.cuda.get_device_name()", "decorator")],
        ),
        ("x = torch.zeros(1).cuda()\n", [(1, ".cuda()", "module level")]),
        ("x = torch.zeros(1, device='cuda:0')\n", [(1, "device='cuda:0'", "module level")]),
        (
            "D = torch.device('cuda')\nx = torch.ones(1, device=D)\n",
            [(2, "device=D", "module level")],
        ),
        (
            "x = torch.ones(1).to(torch.device('cuda'))\n",
            [(1, ".to(torch.device('cuda'))", "module level")],
        ),
        (
            "from torch import cuda\ncuda.set_device(0)\n",
            [(2, "torch.cuda.set_device()", "module level")],
        ),
    ],
)
def test_cuda_evaluated_at_import_is_found(
    tmp_path: Path, source: str, found: list[tuple[int, str, str]]
) -> None:
    assert gpu_sites(tmp_path, source) == found


@pytest.mark.parametrize(
    "source",
    [
        "ok = torch.cuda.is_available()\n",
        "n = torch.cuda.device_count()\n",
        "torch.cuda.manual_seed_all(0)\n",
        "D = torch.device('cuda')\n",
        "D = torch.device('cuda' if torch.cuda.is_available() else 'cpu')\nx = torch.ones(1, device=D)\n",
        "def f():\n    return torch.zeros(1).cuda()\n",
        "def f(device='cuda'):\n    pass\n",
        "g = lambda: torch.cuda.current_device()\n",
        "if __name__ == '__main__':\n    torch.cuda.set_device(0)\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    torch.cuda.init()\n",
        "with torch.cuda.amp.autocast():\n    pass\n",
    ],
)
def test_cuda_that_needs_no_gpu_at_import_is_not_reported(tmp_path: Path, source: str) -> None:
    assert gpu_sites(tmp_path, source) == []


def test_gpu_at_import_is_reported_with_file_line_and_the_probe_class(tmp_path: Path) -> None:
    files = {
        "app.py": "import t5\n",
        "t5.py": "import torch\n\n\ndef encoder(device=torch.cuda.current_device()):\n    pass\n",
    }
    text = render(scan_files(tmp_path, files), "text")
    assert "needs a GPU at import (gpu-at-import, 1):" in text
    assert "  t5.py:4: torch.cuda.current_device() in a default argument" in text
    assert "1 file(s) that need a GPU at import" in text


def test_a_gpu_call_in_a_lazily_imported_module_says_so(tmp_path: Path) -> None:
    files = {
        "app.py": "def f():\n    import warm\n",
        "warm.py": "import torch\ntorch.cuda.init()\n",
    }
    report = scan_files(tmp_path, files, entries=(Path("app.py"),))
    assert [(g.file, g.reach) for g in report.gpu_at_import] == [("warm.py", Reach.LAZY)]
    assert "(its file is reached lazily)" in render(report, "text")


# --- distributions and requirements -----------------------------------------------------------


def test_a_resolved_wheel_decides_the_distribution_over_the_table(tmp_path: Path) -> None:
    repo = write_repo(tmp_path, {"app.py": "import cv2\n", "req.txt": "opencv-python-headless\n"})
    body = "opencv-python-headless==4.10.0.84\n    # via -r requirements.in\n"
    sources = recorded(body, {"opencv-python-headless": ("cv2",)})
    report = scan(ScanOptions(path=repo, requirements=(repo / "req.txt",)), ENV, sources)
    [item] = report.third_party
    assert (item.distributions, item.source, item.guessed) == (
        ("opencv-python-headless",),
        "wheel",
        False,
    )
    assert report.requirements is not None and report.requirements.unused == ()


def test_a_namespace_package_maps_by_its_longest_provided_prefix(tmp_path: Path) -> None:
    repo = write_repo(
        tmp_path,
        {"app.py": "from google.protobuf import message\nimport google.auth\n", "req.txt": "x\n"},
    )
    body = "google-auth==2.0\n    # via x\nprotobuf==5.0\n    # via x\nx==1\n    # via -r r.in\n"
    modules = {"protobuf": ("google.protobuf",), "google-auth": ("google.auth",), "x": ("x",)}
    report = scan(
        ScanOptions(path=repo, requirements=(repo / "req.txt",)), ENV, recorded(body, modules)
    )
    assert [(t.name, t.distributions, t.source) for t in report.third_party] == [
        ("google.auth", ("google-auth",), "wheel"),
        ("google.protobuf", ("protobuf",), "wheel"),
    ]


def test_an_unknown_import_maps_to_its_own_canonical_name(tmp_path: Path) -> None:
    [item] = scan_files(tmp_path, {"app.py": "import Some_Package.sub\n"}).third_party
    assert (item.name, item.distributions, item.source) == (
        "Some_Package",
        ("some-package",),
        "name",
    )


def test_an_import_arriving_through_a_declared_requirement_prints_its_path() -> None:
    report = scan_repo()
    assert report.requirements is not None
    paths = {t.name: t.path for t in report.requirements.transitive}
    assert paths == {
        "huggingface_hub": ("diffusers", "huggingface-hub"),
        "pandas": ("gradio", "pandas"),
    }
    assert "    huggingface_hub: diffusers -> huggingface-hub" in render(report, "text")


def test_the_resolver_is_asked_for_the_declared_requirements_the_python_and_platform() -> None:
    fake = Recorded(REPO_RESOLUTION, REPO_MODULES)
    options = ScanOptions(
        path=REPO, requirements=(REPO / "requirements.txt",), python="3.10", platform="linux/arm64"
    )
    scan(options, ENV, Sources(fake, fake))
    [(requirements, python, platform, indexes)] = fake.asked
    assert (python, platform) == ("3.10", "linux/arm64")
    assert requirements[0] == "torch>=2.4" and len(requirements) == 8
    assert indexes == Indexes(extra_index_urls=("https://download.pytorch.org/whl/cu121",))


def test_index_options_of_requirements_files_and_their_includes_go_to_the_resolver(
    tmp_path: Path,
) -> None:
    files = {
        "app.py": "import rich\n",
        "req.txt": "--index-url https://mirror.example/simple\n-r more.txt\n-f wheels\nrich\n",
        "more.txt": "--extra-index-url https://extra.example/simple\n-f https://links.example\n",
        "wheels/.keep": "",
    }
    repo = write_repo(tmp_path, files)
    fake = Recorded("rich==13.0\n    # via -r r.in\n", {"rich": ("rich",)})
    scan(ScanOptions(path=repo, requirements=(repo / "req.txt",)), ENV, Sources(fake, fake))
    [(_, _, _, indexes)] = fake.asked
    assert indexes == Indexes(
        index_url="https://mirror.example/simple",
        extra_index_urls=("https://extra.example/simple",),
        wheelhouse=(repo / "wheels",),
    )


def test_a_package_installed_here_but_not_in_the_resolution_is_still_undeclared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PyYAML, Jinja2 and click are installed in builder's own venv: they decide nothing."""
    assert importlib.metadata.version("PyYAML") and importlib.metadata.version("Jinja2")

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the scan read the running interpreter's installed packages")

    for name in ("distributions", "packages_distributions", "distribution", "version"):
        monkeypatch.setattr(importlib.metadata, name, forbidden)
    files = {"app.py": "import yaml\nimport jinja2\nimport click\n", "req.txt": "click\n"}
    repo = write_repo(tmp_path, files)
    body = "click==8.1.7\n    # via -r requirements.in\n"
    report = scan(
        ScanOptions(path=repo, requirements=(repo / "req.txt",)),
        current_environment(),
        recorded(body, {"click": ("click",)}),
    )
    assert report.requirements is not None
    undeclared = {t.name: t.distributions for t in report.requirements.undeclared}
    assert undeclared == {"jinja2": ("jinja2",), "yaml": ("pyyaml",)}
    assert report.requirements.transitive == ()


def test_without_a_resolution_an_indirect_dependency_is_undeclared_and_a_warning_says_so() -> None:
    report = scan(scan_fixture(), ENV)
    assert report.requirements is not None
    assert report.requirements.transitive == ()
    assert "huggingface_hub" in [item.name for item in report.requirements.undeclared]
    [warning] = [n.message for n in report.notes if n.level == "warning"]
    assert "were not resolved" in warning and "reported as undeclared" in warning


def test_without_requirements_only_missing_local_modules_fail_the_scan(tmp_path: Path) -> None:
    report = scan_files(tmp_path, {"app.py": "import rich\n"})
    assert (report.requirements, report.exit_code) == (None, 0)


def test_an_undeclared_lazy_import_alone_does_not_fail_the_scan(tmp_path: Path) -> None:
    repo = write_repo(tmp_path, {"app.py": "def f():\n    import rich\n", "req.txt": "click\n"})
    report = scan(ScanOptions(path=repo, requirements=(repo / "req.txt",)), ENV)
    assert report.exit_code == 0


def test_comments_options_continuations_and_hashes_are_skipped_and_includes_read(
    tmp_path: Path,
) -> None:
    text = (
        "# a comment\n-r other.txt\n--index-url https://example.org\n\n"
        "torch==2.4.0 --hash=sha256:abc  # pinned\nnumpy>=1.26 \\\n    ; python_version >= '3.10'\n"
    )
    (tmp_path / "requirements.txt").write_text(text)
    (tmp_path / "other.txt").write_text("rich\n")
    assert [str(req) for req in read_requirements(tmp_path / "requirements.txt")] == [
        "torch==2.4.0",
        'numpy>=1.26; python_version >= "3.10"',
        "rich",
    ]


def test_platform_machine_markers_are_evaluated_for_the_target_platform(tmp_path: Path) -> None:
    (tmp_path / "r.txt").write_text(
        "decord; platform_machine == 'x86_64'\neva-decord; platform_machine == 'aarch64'\n"
    )
    names = {
        m: [r.name for r in read_requirements(tmp_path / "r.txt", "3.11", m)]
        for m in ("x86_64", "aarch64")
    }
    assert names == {"x86_64": ["decord"], "aarch64": ["eva-decord"]}


def test_an_unparsable_requirement_line_is_an_input_error_naming_file_and_line(
    tmp_path: Path,
) -> None:
    (tmp_path / "requirements.txt").write_text("torch\nnot a requirement!\n")
    with pytest.raises(InputError, match=r"requirements\.txt:2: not a requirement"):
        read_requirements(tmp_path / "requirements.txt")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (ScanOptions(path=Path("/no/such/repo")), "no such directory"),
        (ScanOptions(path=REPO, entries=(Path("nope.py"),)), "entry file not found"),
        (ScanOptions(path=REPO, python="three"), "not a X.Y version"),
        (ScanOptions(path=REPO, platform="windows/amd64"), "unknown platform"),
    ],
)
def test_bad_input_is_an_input_error(options: ScanOptions, message: str) -> None:
    with pytest.raises(InputError, match=message):
        scan(options, ENV)


def test_a_target_python_other_than_the_running_one_is_noted(tmp_path: Path) -> None:
    report = scan_files(tmp_path, {"app.py": "import os\n"}, python="3.10")
    assert [note.message for note in report.notes] == [
        "standard-library names are from Python 3.11; the target is 3.10"
    ]


def test_an_entry_given_relative_to_the_repository_is_found(tmp_path: Path) -> None:
    files = {"scripts/run.py": "from . import helper\n", "scripts/helper.py": ""}
    report = scan_files(tmp_path, files, entries=(Path("scripts/run.py"),))
    assert report.files == ("scripts/helper.py", "scripts/run.py")


def test_the_current_environment_is_the_interpreter_s_standard_library_only() -> None:
    env = current_environment()
    assert env.version == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert {"os", "json"} <= env.stdlib and "yaml" not in env.stdlib


# --- profile draft ------------------------------------------------------------------------------


def test_the_profile_draft_is_the_golden_yaml_and_parses() -> None:
    draft = render_profile_draft(scan_repo())
    assert draft == golden("profile.yaml")
    assert list(yaml.safe_load(draft)) == [
        "name",
        "source",
        "requirements",
        "imports",
        "optional_imports",
    ]


def test_the_profile_draft_is_written_atomically_without_leftovers(tmp_path: Path) -> None:
    target = tmp_path / "profile.yaml"
    write_profile_draft(scan_repo(), target)
    assert target.read_text() == golden("profile.yaml")
    assert [path.name for path in tmp_path.iterdir()] == ["profile.yaml"]


def test_a_profile_draft_into_a_directory_is_named_after_the_repository(tmp_path: Path) -> None:
    written = write_profile_draft(scan_repo(), tmp_path)
    assert written == tmp_path / "scan_repo.yaml"
    assert yaml.safe_load(written.read_text())["name"] == "scan_repo"


@pytest.mark.parametrize(
    ("directory", "name"),
    [("MultiTalk", "multitalk"), ("Wan2.2", "wan2.2"), ("scan_repo", "scan_repo"), ("__x__", "x")],
)
def test_the_draft_s_name_is_the_repository_directory_made_a_valid_profile_name(
    tmp_path: Path, directory: str, name: str
) -> None:
    repo = write_repo(tmp_path / directory, {"app.py": "import rich\n"})
    assert yaml.safe_load(render_profile_draft(scan(ScanOptions(path=repo), ENV)))["name"] == name


def test_an_ambiguous_distribution_has_alternatives_in_the_profile_draft(tmp_path: Path) -> None:
    draft = yaml.safe_load(render_profile_draft(scan_files(tmp_path, {"app.py": "import cv2\n"})))
    [rule] = draft["requirements"]
    assert rule["requirement"] == "opencv-python"
    assert rule["alternatives"] == ["opencv-python-headless"]
    assert rule["source"] == "app.py:1: import cv2 (not declared; distribution guessed)"


def test_the_draft_says_a_gpu_is_needed_at_import_with_its_source(tmp_path: Path) -> None:
    files = {"app.py": "import torch\n\ndef f(d=torch.cuda.current_device()):\n    pass\n"}
    draft = yaml.safe_load(render_profile_draft(scan_files(tmp_path, files)))
    assert draft["gpu_at_import"] == {
        "value": True,
        "source": "app.py:3: torch.cuda.current_device() (default argument)",
    }


# --- the command ---------------------------------------------------------------------------------


def test_the_scan_command_prints_json_writes_the_draft_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUILDER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv"))
    draft = tmp_path / "profiles"
    draft.mkdir()
    args = ["scan", str(REPO), "--format", "json", "--profile-draft", str(draft), "--offline"]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--requirements", str(REPO / "requirements.txt")])
    assert exit_info.value.code == 1
    report = json.loads(capsys.readouterr().out)
    assert [m["module"] for m in report["missing_local"]] == [
        "src.audio_analysis.wav2vec2",
        "._kernels",
        ".checkpoints",
    ]
    assert report["python"]["platform"] == "linux/amd64"
    assert yaml.safe_load((draft / "scan_repo.yaml").read_text())["name"] == "scan_repo"


def test_a_draft_file_not_named_after_the_profile_is_written_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["scan", str(REPO), "--profile-draft", str(tmp_path / "draft.yaml")])
    assert (tmp_path / "draft.yaml").is_file()
    assert "rename it to scan_repo.yaml" in capsys.readouterr().out


def test_the_scan_command_exits_2_on_a_missing_entry(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["scan", str(REPO), "--entry", "nope.py"])
    assert exit_info.value.code == 2
    assert "nope.py: entry file not found" in capsys.readouterr().err


def test_the_scan_command_exits_2_on_an_unknown_platform(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["scan", str(REPO), "--platform", "linux/mips"])
    assert exit_info.value.code == 2
    assert "--platform linux/mips: unknown platform" in capsys.readouterr().err


# --- hostile repositories: every file is a finding or skipped, never a crash or a hang ---------

SCAN_BAD = FIXTURES / "scan_bad"


@pytest.fixture
def offline(tmp_path: Path) -> dict[str, str]:
    """An environment where uv and builder have empty caches of their own (with --offline,
    nothing is resolved and nothing reaches the network)."""
    return {
        "BUILDER_CACHE_DIR": str(tmp_path / "builder-cache"),
        "UV_CACHE_DIR": str(tmp_path / "uv-cache"),
    }


def scan_json(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    done = run_cli("scan", *args, "--offline", "--format", "json", env=env, timeout=120)
    assert "Traceback" not in done.err, done.err
    assert done.code in (0, 1), done.err
    return done.code, json.loads(done.out)


def warnings_of(report: dict[str, Any]) -> list[str]:
    return [note["message"] for note in report["notes"] if note["level"] == "warning"]


def test_a_400_branch_elif_chain_is_walked_and_its_deepest_import_found(tmp_path: Path) -> None:
    branches = "".join(f"elif x == {n}:\n    import mod{n}\n" for n in range(400))
    repo = write_repo(tmp_path, {"app.py": f"x = 0\nif x:\n    pass\n{branches}"})
    report = scan(ScanOptions(path=repo), ENV)
    assert len(report.third_party) == 400
    assert "mod399" in [item.name for item in report.third_party]
    assert report.notes == ()


def test_a_200k_term_expression_is_a_not_parsed_warning_and_the_scan_goes_on(
    tmp_path: Path,
) -> None:
    big = "x = " + "+".join(["1"] * 200_000) + "\nimport never_seen\n"
    repo = write_repo(tmp_path, {"app.py": "import big\nimport rich\n", "big.py": big})
    code, report = scan_json(str(repo))
    assert code == 0
    assert [item["import"] for item in report["third_party"]] == ["rich"]
    [warning] = warnings_of(report)
    assert warning.startswith("big.py: not parsed: too deeply nested")


def test_a_symlink_loop_at_the_top_is_skipped_with_a_warning(tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "repo", {"app.py": "import rich\n"})
    (repo / "loop.py").symlink_to("loop.py")
    code, report = scan_json(str(repo))
    assert (code, report["files"]) == (0, ["app.py"])
    assert warnings_of(report) == ["loop.py: skipped: a symbolic link loop"]


def test_links_out_of_the_repository_are_skipped_and_not_read(tmp_path: Path) -> None:
    outside = write_repo(
        tmp_path / "outside",
        {"secret.py": "import outside_file\n", "pkg/__init__.py": "import outside_pkg\n"},
    )
    repo = write_repo(tmp_path / "repo", {"app.py": "import linked\nimport pkg\n"})
    (repo / "top.py").symlink_to(outside / "secret.py")
    (repo / "linked.py").symlink_to(outside / "secret.py")
    (repo / "pkg").symlink_to(outside / "pkg")
    code, report = scan_json(str(repo))
    assert (code, report["files"], report["third_party"]) == (0, ["app.py"], [])
    beyond = ", outside the repository"
    assert warnings_of(report) == [
        f"linked.py: skipped: links to {outside.resolve() / 'secret.py'}{beyond}",
        f"pkg/__init__.py: skipped: links to {outside.resolve() / 'pkg/__init__.py'}{beyond}",
        f"top.py: skipped: links to {outside.resolve() / 'secret.py'}{beyond}",
    ]


def test_a_fifo_named_like_a_module_is_skipped_without_hanging(tmp_path: Path) -> None:
    repo = write_repo(tmp_path, {"app.py": "import rich\n"})
    os.mkfifo(repo / "x.py")
    code, report = scan_json(str(repo))
    assert (code, report["files"]) == (0, ["app.py"])
    assert warnings_of(report) == ["x.py: skipped: not a regular file"]


def test_a_py_file_that_is_not_utf8_is_a_not_parsed_warning(tmp_path: Path) -> None:
    repo = write_repo(tmp_path, {"app.py": "import lib\nimport rich\n"})
    (repo / "lib.py").write_bytes(b"name = 'caf\xe9'\nimport never_seen\n")
    code, report = scan_json(str(repo))
    assert (code, report["syntax_errors"]) == (0, [])
    assert [item["import"] for item in report["third_party"]] == ["rich"]
    [warning] = warnings_of(report)
    assert warning.startswith("lib.py: not parsed: not valid utf-8 text (byte 11:")


def test_a_py_file_declaring_its_encoding_is_decoded_with_it(tmp_path: Path) -> None:
    repo = write_repo(tmp_path, {"app.py": "import lib\n"})
    (repo / "lib.py").write_bytes(b"# -*- coding: latin-1 -*-\nname = 'caf\xe9'\nimport rich\n")
    report = scan(ScanOptions(path=repo), ENV)
    assert ([item.name for item in report.third_party], report.notes) == (["rich"], ())


def test_a_requirements_file_that_is_not_utf8_is_exit_2_naming_it() -> None:
    fixture = SCAN_BAD / "latin1_requirements"
    done = run_cli("scan", str(fixture), "-r", str(fixture / "requirements.txt"))
    assert done.code == 2
    assert f"{fixture / 'requirements.txt'}: cannot read requirements file: not UTF-8" in done.err
    assert "Traceback" not in done.err


def test_r_includes_are_followed_relative_to_the_including_file_and_cycles_stop(
    offline: dict[str, str],
) -> None:
    fixture = SCAN_BAD / "includes"
    code, report = scan_json(str(fixture), "-r", str(fixture / "requirements.txt"), env=offline)
    assert code == 0
    assert report["requirements"]["declared"] == ["rich>=13", "click"]
    assert report["requirements"]["undeclared"]["required"] == []


def test_an_editable_or_url_requirement_with_an_egg_name_declares_that_name(
    offline: dict[str, str],
) -> None:
    fixture = SCAN_BAD / "egg"
    code, report = scan_json(str(fixture), "-r", str(fixture / "requirements.txt"), env=offline)
    assert (code, report["requirements"]["undeclared"]["required"]) == (0, [])
    dropped = report["requirements"]["resolution"]["dropped"]  # uv cannot fetch them offline
    assert sorted(d["requirement"] for d in dropped) == [
        "PyYAML @ git+https://github.com/yaml/pyyaml.git",
        "zed @ git+https://example.org/zed.git",
    ]
    assert report["requirements"]["declared"] == [
        "PyYAML @ git+https://github.com/yaml/pyyaml.git",
        "zed @ git+https://example.org/zed.git",
    ]


def test_a_constraints_file_is_read_but_declares_nothing(offline: dict[str, str]) -> None:
    fixture = SCAN_BAD / "constraints"
    code, report = scan_json(str(fixture), "-r", str(fixture / "requirements.txt"), env=offline)
    assert code == 1
    assert report["requirements"]["undeclared"]["required"] == [
        {"import": "click", "distributions": ["click"], "guessed": True}
    ]


@pytest.mark.parametrize(
    ("python", "code", "declared"),
    [("3.10", 0, ['tomli; python_version < "3.11"']), ("3.11", 1, [])],
)
def test_requirement_markers_are_evaluated_for_the_target_python_on_linux(
    python: str, code: int, declared: list[str], offline: dict[str, str]
) -> None:
    fixture = SCAN_BAD / "markers"
    args = (str(fixture), "-r", str(fixture / "requirements.txt"), "--python", python)
    found, report = scan_json(*args, env=offline)
    assert (found, report["requirements"]["declared"]) == (code, declared)
    assert report["requirements"]["unused"] == []


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("url_include", "requirements.txt:2: -r https://example.org/base.txt: cannot follow a URL"),
        ("missing_include", "nope.txt: requirements file not found"),
        ("bad_line", "requirements.txt:3: not a requirement: 'not a requirement!'"),
        ("bad_marker", 'requirements.txt:1: marker python_version ~= "3": Undefined'),
    ],
)
def test_a_bad_requirements_file_is_exit_2_naming_file_and_line(case: str, message: str) -> None:
    fixture = SCAN_BAD / case
    done = run_cli("scan", str(fixture), "-r", str(fixture / "requirements.txt"))
    assert done.code == 2
    assert message in done.err
    assert "Traceback" not in done.err


def test_a_profile_draft_onto_a_fifo_is_exit_2_and_the_fifo_stays(tmp_path: Path) -> None:
    target = tmp_path / "draft.yaml"
    os.mkfifo(target)
    done = run_cli("scan", str(REPO), "--profile-draft", str(target), timeout=120)
    assert done.code == 2
    assert f"{target}: cannot write: not a regular file" in done.err
    assert stat.S_ISFIFO(target.lstat().st_mode)
    assert [path.name for path in tmp_path.iterdir()] == ["draft.yaml"]


def test_a_profile_draft_under_a_file_is_exit_2_and_nothing_is_written(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("keep\n")
    target = tmp_path / "file" / "draft.yaml"
    done = run_cli("scan", str(REPO), "--profile-draft", str(target))
    assert done.code == 2
    assert f"{target}: cannot write: " in done.err
    assert "Traceback" not in done.err
    assert [path.name for path in tmp_path.iterdir()] == ["file"]
    assert (tmp_path / "file").read_text() == "keep\n"


def test_a_profile_draft_into_a_read_only_directory_is_exit_2(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    done = run_cli(
        "scan", str(REPO), "--profile-draft", str(folder / "draft.yaml"), unprivileged=True
    )
    assert done.code == 2
    assert f"{folder / 'draft.yaml'}: cannot write: Permission denied" in done.err
    assert list(folder.iterdir()) == []
