"""`builder scan`: static import graph, classification, distributions, requirements."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from builder.cli import main
from builder.errors import InputError
from builder.scan import (
    Environment,
    Reach,
    ScanOptions,
    current_environment,
    read_requirements,
    render,
    render_profile_draft,
    scan,
    write_profile_draft,
)
from tests.conftest import run_cli

FIXTURES = Path(__file__).parent.parent / "fixtures"
REPO = FIXTURES / "scan_repo"
EXPECTED = FIXTURES / "scan_expected"
STDLIB = frozenset(sys.stdlib_module_names)
INSTALLED = Environment(
    version="3.11",
    stdlib=STDLIB,
    packages={"PIL": ("Pillow",)},
    requires={
        "diffusers": ("huggingface-hub>=0.27", "numpy", "pytest; extra == 'test'"),
        "huggingface-hub": ("tqdm>=4.42.1",),
    },
)
BARE = Environment(version="3.11", stdlib=STDLIB)


def golden(name: str) -> str:
    return (EXPECTED / name).read_text().replace("@REPO@", str(REPO))


def scan_fixture() -> ScanOptions:
    return ScanOptions(path=REPO, requirements=(REPO / "requirements.txt",), python="3.11")


def write_repo(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_fixture_repository_scans_to_the_golden_text_report() -> None:
    report = scan(scan_fixture(), INSTALLED)
    assert render(report, "text") + "\n" == golden("report.txt")


def test_the_fixture_repository_scans_to_the_golden_json_report() -> None:
    report = scan(scan_fixture(), INSTALLED)
    assert json.loads(render(report, "json")) == json.loads(golden("report.json"))


def test_the_profile_draft_is_the_golden_yaml_and_parses() -> None:
    draft = render_profile_draft(scan(scan_fixture(), INSTALLED))
    assert draft == golden("profile.yaml")
    assert sorted(yaml.safe_load(draft)) == [
        "imports",
        "name",
        "optional_imports",
        "requirements",
        "source",
    ]


def test_the_profile_draft_is_written_atomically_without_leftovers(tmp_path: Path) -> None:
    target = tmp_path / "profile.yaml"
    write_profile_draft(scan(scan_fixture(), INSTALLED), target)
    assert target.read_text() == golden("profile.yaml")
    assert [path.name for path in tmp_path.iterdir()] == ["profile.yaml"]


def test_an_ambiguous_distribution_is_commented_in_the_profile_draft(tmp_path: Path) -> None:
    repo = write_repo(tmp_path, {"app.py": "import cv2\n"})
    draft = render_profile_draft(scan(ScanOptions(path=repo), BARE))
    assert (
        '  - "opencv-python"  # cv2: ambiguous, one of opencv-python | opencv-python-headless'
        in draft
    )


def test_the_strongest_reach_wins_and_every_location_is_kept() -> None:
    report = scan(scan_fixture(), INSTALLED)
    torch = next(item for item in report.third_party if item.name == "torch")
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
    report = scan(ScanOptions(path=write_repo(tmp_path, {"app.py": source})), BARE)
    assert [(item.name, item.reach) for item in report.third_party] == [("rich", Reach.LAZY)]


def test_a_try_around_a_def_does_not_make_the_body_imports_optional(tmp_path: Path) -> None:
    source = "try:\n    def f():\n        import rich\nexcept ImportError:\n    pass\n"
    report = scan(ScanOptions(path=write_repo(tmp_path, {"app.py": source})), BARE)
    assert report.third_party[0].reach is Reach.LAZY


def test_a_try_that_does_not_catch_import_errors_leaves_imports_required(tmp_path: Path) -> None:
    source = "try:\n    import rich\nexcept KeyError:\n    pass\n"
    report = scan(ScanOptions(path=write_repo(tmp_path, {"app.py": source})), BARE)
    assert report.third_party[0].reach is Reach.MODULE


def test_imports_under_type_checking_are_not_reported(tmp_path: Path) -> None:
    source = "import typing\nif typing.TYPE_CHECKING:\n    import pandas\nelse:\n    import rich\n"
    report = scan(ScanOptions(path=write_repo(tmp_path, {"app.py": source})), BARE)
    assert [item.name for item in report.third_party] == ["rich"]


def test_a_syntax_error_is_a_finding_with_file_and_line_not_a_crash(tmp_path: Path) -> None:
    repo = write_repo(tmp_path, {"app.py": "import lib\n", "lib.py": "x = 1\ndef broken(:\n"})
    report = scan(ScanOptions(path=repo), BARE)
    assert [(s.file, s.line) for s in report.syntax_errors] == [("lib.py", 2)]
    assert "lib.py:2: " in render(report, "text")


def test_a_relative_import_above_the_repository_root_is_a_missing_local_module(
    tmp_path: Path,
) -> None:
    repo = write_repo(tmp_path, {"app.py": "import pkg\n", "pkg/__init__.py": "from .. import x\n"})
    report = scan(ScanOptions(path=repo), BARE)
    [missing] = report.missing_local
    assert (missing.file, missing.line, missing.module) == ("pkg/__init__.py", 1, "..")
    assert missing.reason == "relative import beyond the repository root"


def test_a_submodule_import_resolves_to_its_file(tmp_path: Path) -> None:
    files = {
        "app.py": "from pkg import sub\n",
        "pkg/__init__.py": "",
        "pkg/sub.py": "import rich\n",
    }
    report = scan(ScanOptions(path=write_repo(tmp_path, files)), BARE)
    assert report.files == ("app.py", "pkg/__init__.py", "pkg/sub.py")
    assert [item.name for item in report.third_party] == ["rich"]


def test_a_name_missing_from_a_namespace_package_is_a_missing_local_module(
    tmp_path: Path,
) -> None:
    files = {"app.py": "from ns import here, absent\n", "ns/here.py": ""}
    report = scan(ScanOptions(path=write_repo(tmp_path, files)), BARE)
    assert [(m.module, m.reason) for m in report.missing_local] == [
        ("ns", "no module or package at ns/absent")
    ]
    assert report.exit_code == 1


def test_an_import_of_a_missing_submodule_of_a_local_package_is_missing(tmp_path: Path) -> None:
    files = {"app.py": "import pkg.gone\n", "pkg/__init__.py": ""}
    report = scan(ScanOptions(path=write_repo(tmp_path, files)), BARE)
    assert [m.reason for m in report.missing_local] == ["no module or package at pkg/gone"]


def test_a_missing_local_module_behind_an_import_guard_does_not_fail_the_scan(
    tmp_path: Path,
) -> None:
    source = "try:\n    from ._speedups import fast\nexcept ImportError:\n    pass\n"
    repo = write_repo(tmp_path, {"app.py": "import pkg\n", "pkg/__init__.py": source})
    report = scan(ScanOptions(path=repo), BARE)
    assert [(m.module, m.reach) for m in report.missing_local] == [("._speedups", Reach.OPTIONAL)]
    assert report.exit_code == 0


def test_a_compiled_extension_module_counts_as_a_local_module(tmp_path: Path) -> None:
    files = {"app.py": "from pkg import fast\nimport native\n", "pkg/__init__.py": ""}
    repo = write_repo(tmp_path, files)
    (repo / "pkg" / "fast.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\x7fELF")
    (repo / "native.abi3.so").write_bytes(b"\x7fELF")
    report = scan(ScanOptions(path=repo), BARE)
    assert (report.missing_local, report.third_party) == ((), ())
    assert report.files == ("app.py", "pkg/__init__.py")


def test_dotted_table_entries_win_over_installed_top_level_metadata(tmp_path: Path) -> None:
    env = Environment("3.11", STDLIB, {"google": ("protobuf", "google-auth")})
    repo = write_repo(tmp_path, {"app.py": "from google.protobuf import message\n"})
    [item] = scan(ScanOptions(path=repo), env).third_party
    assert (item.name, item.distributions, item.source) == (
        "google.protobuf",
        ("protobuf",),
        "table",
    )


def test_installed_metadata_wins_over_the_table_for_top_level_names(tmp_path: Path) -> None:
    env = Environment("3.11", STDLIB, {"cv2": ("opencv-python-headless",)})
    repo = write_repo(tmp_path, {"app.py": "import cv2\n"})
    [item] = scan(ScanOptions(path=repo), env).third_party
    assert (item.distributions, item.source) == (("opencv-python-headless",), "installed")


def test_an_unknown_import_maps_to_its_own_canonical_name(tmp_path: Path) -> None:
    repo = write_repo(tmp_path, {"app.py": "import Some_Package.sub\n"})
    [item] = scan(ScanOptions(path=repo), BARE).third_party
    assert (item.name, item.distributions, item.source) == (
        "Some_Package",
        ("some-package",),
        "name",
    )


def test_without_installed_metadata_an_indirect_dependency_is_undeclared() -> None:
    report = scan(scan_fixture(), BARE)
    assert report.requirements is not None
    assert report.requirements.transitive == ()
    assert "huggingface_hub" in [item.name for item in report.requirements.undeclared]


def test_without_requirements_only_missing_local_modules_fail_the_scan(tmp_path: Path) -> None:
    repo = write_repo(tmp_path, {"app.py": "import rich\n"})
    report = scan(ScanOptions(path=repo), BARE)
    assert (report.requirements, report.exit_code) == (None, 0)


def test_an_undeclared_lazy_import_alone_does_not_fail_the_scan(tmp_path: Path) -> None:
    repo = write_repo(tmp_path, {"app.py": "def f():\n    import rich\n", "req.txt": "click\n"})
    report = scan(ScanOptions(path=repo, requirements=(repo / "req.txt",)), BARE)
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
    ],
)
def test_bad_input_is_an_input_error(options: ScanOptions, message: str) -> None:
    with pytest.raises(InputError, match=message):
        scan(options, BARE)


def test_a_target_python_other_than_the_running_one_is_noted(tmp_path: Path) -> None:
    repo = write_repo(tmp_path, {"app.py": "import os\n"})
    report = scan(ScanOptions(path=repo, python="3.10"), BARE)
    assert [note.message for note in report.notes] == [
        "standard-library names are from Python 3.11; the target is 3.10"
    ]


def test_an_entry_given_relative_to_the_repository_is_found(tmp_path: Path) -> None:
    repo = write_repo(
        tmp_path, {"scripts/run.py": "from . import helper\n", "scripts/helper.py": ""}
    )
    report = scan(ScanOptions(path=repo, entries=(Path("scripts/run.py"),)), BARE)
    assert report.files == ("scripts/helper.py", "scripts/run.py")


def test_the_current_environment_reads_installed_metadata() -> None:
    env = current_environment()
    assert "PyYAML" in env.packages["yaml"]
    assert any(req.startswith("MarkupSafe") for req in env.requires["jinja2"])


def test_the_scan_command_prints_json_writes_the_draft_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    draft = tmp_path / "profile.yaml"
    args = ["scan", str(REPO), "--format", "json", "--profile-draft", str(draft)]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--requirements", str(REPO / "requirements.txt")])
    assert exit_info.value.code == 1
    report = json.loads(capsys.readouterr().out)
    assert [m["module"] for m in report["missing_local"]] == [
        "src.audio_analysis.wav2vec2",
        "._kernels",
        ".checkpoints",
    ]
    assert yaml.safe_load(draft.read_text())["name"] == "scan_repo"


def test_the_scan_command_exits_2_on_a_missing_entry(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["scan", str(REPO), "--entry", "nope.py"])
    assert exit_info.value.code == 2
    assert "nope.py: entry file not found" in capsys.readouterr().err


# --- hostile repositories: every file is a finding or skipped, never a crash or a hang ---------

SCAN_BAD = FIXTURES / "scan_bad"


def scan_json(*args: str) -> tuple[int, dict[str, Any]]:
    done = run_cli("scan", *args, "--format", "json", timeout=120)
    assert "Traceback" not in done.err, done.err
    assert done.code in (0, 1), done.err
    return done.code, json.loads(done.out)


def warnings_of(report: dict[str, Any]) -> list[str]:
    return [note["message"] for note in report["notes"] if note["level"] == "warning"]


def test_a_400_branch_elif_chain_is_walked_and_its_deepest_import_found(tmp_path: Path) -> None:
    branches = "".join(f"elif x == {n}:\n    import mod{n}\n" for n in range(400))
    repo = write_repo(tmp_path, {"app.py": f"x = 0\nif x:\n    pass\n{branches}"})
    report = scan(ScanOptions(path=repo), BARE)
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
    report = scan(ScanOptions(path=repo), BARE)
    assert ([item.name for item in report.third_party], report.notes) == (["rich"], ())


def test_a_requirements_file_that_is_not_utf8_is_exit_2_naming_it() -> None:
    fixture = SCAN_BAD / "latin1_requirements"
    done = run_cli("scan", str(fixture), "-r", str(fixture / "requirements.txt"))
    assert done.code == 2
    assert f"{fixture / 'requirements.txt'}: cannot read requirements file: not UTF-8" in done.err
    assert "Traceback" not in done.err


def test_r_includes_are_followed_relative_to_the_including_file_and_cycles_stop() -> None:
    fixture = SCAN_BAD / "includes"
    code, report = scan_json(str(fixture), "-r", str(fixture / "requirements.txt"))
    assert code == 0
    assert report["requirements"]["declared"] == ["rich>=13", "click"]
    assert report["requirements"]["undeclared"]["required"] == []


def test_an_editable_or_url_requirement_with_an_egg_name_declares_that_name() -> None:
    fixture = SCAN_BAD / "egg"
    code, report = scan_json(str(fixture), "-r", str(fixture / "requirements.txt"))
    assert (code, report["requirements"]["undeclared"]["required"]) == (0, [])
    assert report["requirements"]["declared"] == [
        "PyYAML @ git+https://github.com/yaml/pyyaml.git",
        "zed @ git+https://example.org/zed.git",
    ]


def test_a_constraints_file_is_read_but_declares_nothing() -> None:
    fixture = SCAN_BAD / "constraints"
    code, report = scan_json(str(fixture), "-r", str(fixture / "requirements.txt"))
    assert code == 1
    assert report["requirements"]["undeclared"]["required"] == [
        {"import": "click", "distributions": ["click"]}
    ]


@pytest.mark.parametrize(
    ("python", "code", "declared"),
    [("3.10", 0, ['tomli; python_version < "3.11"']), ("3.11", 1, [])],
)
def test_requirement_markers_are_evaluated_for_the_target_python_on_linux(
    python: str, code: int, declared: list[str]
) -> None:
    fixture = SCAN_BAD / "markers"
    args = (str(fixture), "-r", str(fixture / "requirements.txt"), "--python", python)
    found, report = scan_json(*args)
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
