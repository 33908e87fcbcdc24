"""Requirement files: the reader (pip's rules), `-r`/`-c` entries in a matrix's `requirements`,
and `builder check -r FILE`, which checks them as the one cell of an equivalent matrix.

Offline: the check comparison uses the recorded index (tests/fixtures/index) and a recorded
uv resolution seeded into the resolution cache, as tests/unit/test_check.py does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from builder import errors
from builder.cli import cli, main
from builder.errors import InputError
from builder.lock import inputs_digest
from builder.matrix import Matrix, load_matrix, requirements_matrix
from builder.requirements import MAX_BYTES, MAX_DEPTH, read_requirements

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RECORDED = FIXTURES / "check" / "transformers-wan22" / "resolved" / "cu121.transformers-4.47.0.txt"
# The transformers-wan22 seed's requirements, transformers on line 7 (after a comment).
REQUIREMENTS = """\
# the Wan2.2 seed
torch==2.4.0
torchvision==0.19.0
torchaudio==2.4.0
diffusers==0.31.0
accelerate==1.1.1
transformers==4.47.0
-r more.txt
"""
MORE = """\
peft==0.17.0
tokenizers==0.21.0
opencv-python-headless==4.10.0.84
imageio==2.36.1
imageio-ffmpeg==0.5.1
decord==0.6.0
librosa==0.10.2
soundfile==0.12.1
numpy==1.26.4
scipy==1.14.1
einops==0.8.0
easydict==1.13
ftfy==6.3.1
sentencepiece==0.2.0
tqdm
dashscope
"""


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def matrix_file(tmp_path: Path, requirements: str, extra: str = "") -> Path:
    return write(
        tmp_path / "matrix.yaml",
        "version: 1\nbases:\n  b: {image: python:3.11, python: '3.11'}\naxes:\n  base: [b]\n"
        f"requirements:\n{requirements}{extra}",
    )


def refused(root: Path, name: str) -> str:
    with pytest.raises(InputError) as caught:
        read_requirements(root, name)
    return f"{caught.value.message}\n{caught.value.hint or ''}"


def run_main(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    code = exit_info.value.code
    assert isinstance(code, int)
    return code, capsys.readouterr().err


# ---------------------------------------------------------------- the reader


def test_nested_requirement_and_constraint_files_are_read_relative_to_their_includer(
    tmp_path: Path,
) -> None:
    write(tmp_path / "requirements.txt", "numpy<2\n-r sub/more.txt\n-c pins.txt\npeft\n")
    write(tmp_path / "sub" / "more.txt", "# more\ntransformers==4.51.3\n-r ../up.txt\n")
    write(tmp_path / "up.txt", "einops\n")
    write(tmp_path / "pins.txt", "torch==2.4.1\n")
    declared = read_requirements(tmp_path, "requirements.txt")
    assert [(line.text, line.origin) for line in declared.requirements] == [
        ("numpy<2", "requirements.txt:1"),
        ("transformers==4.51.3", "sub/more.txt:2"),
        ("einops", "sub/../up.txt:1"),
        ("peft", "requirements.txt:4"),
    ]
    assert [(line.text, line.origin) for line in declared.constraints] == [
        ("torch==2.4.1", "pins.txt:1")
    ]


def test_markers_stay_hashes_go_and_a_continued_line_keeps_its_first_line_number(
    tmp_path: Path,
) -> None:
    write(
        tmp_path / "r.txt",
        'numpy>=1.23.5,<2 ; python_version < "3.12" \\\n'
        "    --hash=sha256:0123\n"
        "--require-hashes\n"
        "torch==2.4.1 --hash=sha256:4567  # a comment\n"
        "foo @ https://example.com/foo-1.0.tar.gz\n",
    )
    declared = read_requirements(tmp_path, "r.txt")
    assert [(line.text, line.line) for line in declared.requirements] == [
        ('numpy<2,>=1.23.5; python_version < "3.12"', 1),
        ("torch==2.4.1", 4),
        ("foo @ https://example.com/foo-1.0.tar.gz", 5),
    ]


def test_a_file_included_twice_is_read_once(tmp_path: Path) -> None:
    write(tmp_path / "r.txt", "-r a.txt\n-r b.txt\n")
    write(tmp_path / "a.txt", "-r common.txt\n")
    write(tmp_path / "b.txt", "-r common.txt\n")
    write(tmp_path / "common.txt", "peft\n")
    declared = read_requirements(tmp_path, "r.txt")
    assert [line.text for line in declared.requirements] == ["peft"]
    assert declared.files == ("r.txt", "a.txt", "common.txt", "b.txt")


def test_a_loop_of_includes_is_refused_naming_the_line_and_the_loop(tmp_path: Path) -> None:
    write(tmp_path / "a.txt", "peft\n-r b.txt\n")
    write(tmp_path / "b.txt", "\n\n-r a.txt\n")
    assert refused(tmp_path, "a.txt").startswith(
        "b.txt:3: -r a.txt: an include loop (a.txt -> b.txt -> a.txt)"
    )


def test_includes_nested_too_deep_are_refused(tmp_path: Path) -> None:
    for i in range(MAX_DEPTH + 1):
        write(tmp_path / f"{i}.txt", f"-r {i + 1}.txt\n")
    write(tmp_path / f"{MAX_DEPTH + 1}.txt", "peft\n")
    assert f"{MAX_DEPTH - 1}.txt:1: -r {MAX_DEPTH}.txt: includes nested deeper than" in refused(
        tmp_path, "0.txt"
    )


def test_a_missing_included_file_names_the_line_that_includes_it(tmp_path: Path) -> None:
    write(tmp_path / "r.txt", "peft\n-c nowhere.txt\n")
    assert refused(tmp_path, "r.txt").startswith(
        "nowhere.txt: requirements file not found (included at r.txt:2)"
    )


def test_a_directory_a_fifo_and_a_symlink_loop_are_named_as_what_they_are(tmp_path: Path) -> None:
    (tmp_path / "dir.txt").mkdir()
    os.mkfifo(tmp_path / "fifo.txt")  # opening it would block: it must never be opened
    (tmp_path / "loop.txt").symlink_to(tmp_path / "loop.txt")
    assert "dir.txt: cannot read requirements file: it is a directory" in refused(
        tmp_path, "dir.txt"
    )
    assert "fifo.txt: cannot read requirements file: it is a FIFO" in refused(tmp_path, "fifo.txt")
    assert "loop.txt: cannot read requirements file: Too many levels of symbolic links" in (
        refused(tmp_path, "loop.txt")
    )


def test_a_non_utf8_byte_is_named_with_its_line(tmp_path: Path) -> None:
    write(tmp_path / "r.txt", b"peft\n# caf\xe9\n")
    assert refused(tmp_path, "r.txt").startswith("r.txt:2: byte 0xe9 is not UTF-8")


def test_a_bom_is_fine(tmp_path: Path) -> None:
    write(tmp_path / "r.txt", "\ufeffpeft\n".encode())
    assert [line.text for line in read_requirements(tmp_path, "r.txt").requirements] == ["peft"]


def test_a_file_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "r.txt", "# " + "x" * MAX_BYTES + "\n")
    assert f"r.txt: requirements file is larger than {MAX_BYTES} bytes" in refused(
        tmp_path, "r.txt"
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("-e .", "r.txt:2: editable requirement '-e .'"),
        ("./dist/pkg", "r.txt:2: './dist/pkg' is a path or URL, not a requirement"),
        ("https://x.org/a-1.0-py3-none-any.whl", "is a path or URL, not a requirement"),
        ("--pre", "r.txt:2: --pre is not supported"),
        ("--trusted-host x.org", "r.txt:2: --trusted-host is not supported"),
        ("peft --install-option=--x", "r.txt:2: per-requirement options are not supported"),
        ("-r https://x.org/r.txt", "r.txt:2: -r https://x.org/r.txt: cannot follow a URL"),
        ("x==${VERSION}", "environment variables are not expanded"),
        ("not a requirement!", "r.txt:2: not a requirement: 'not a requirement!'"),
    ],
)
def test_lines_builder_cannot_lock_are_refused_naming_the_line(
    tmp_path: Path, line: str, expected: str
) -> None:
    write(tmp_path / "r.txt", f"peft\n{line}\n")
    assert expected in refused(tmp_path, "r.txt")


def test_a_constraint_may_not_have_extras(tmp_path: Path) -> None:
    write(tmp_path / "r.txt", "-c c.txt\n")
    write(tmp_path / "c.txt", "transformers[torch]==4.51.3\n")
    assert "c.txt:1: a constraint cannot have extras" in refused(tmp_path, "r.txt")


def test_index_options_are_returned_with_their_lines(tmp_path: Path) -> None:
    write(
        tmp_path / "r.txt",
        "-i https://pypi.org/simple\n--extra-index-url=https://download.pytorch.org/whl/cu121\n"
        "-f wheels\npeft\n",
    )
    options = read_requirements(tmp_path, "r.txt").indexes
    assert [(o.flag, o.value, o.origin) for o in options] == [
        ("--index-url", "https://pypi.org/simple", "r.txt:1"),
        ("--extra-index-url", "https://download.pytorch.org/whl/cu121", "r.txt:2"),
        ("--find-links", "wheels", "r.txt:3"),
    ]


# ---------------------------------------------------------------- -r entries in a matrix


def test_a_matrix_expands_r_entries_relative_to_itself_keeping_each_lines_origin(
    tmp_path: Path,
) -> None:
    write(tmp_path / "reqs" / "base.txt", "\ntransformers==4.51.3\n-c pins.txt\n")
    write(tmp_path / "reqs" / "pins.txt", "torch<2.6\n")
    path = matrix_file(tmp_path, "  - numpy<2\n  - -r reqs/base.txt\n  - peft\n")
    cell = load_matrix(path).cells[0]
    assert cell.requirement_lines() == ("numpy<2", "transformers==4.51.3", "peft")
    assert cell.origins == (
        ("numpy<2", "matrix.yaml:7"),
        ("transformers==4.51.3", "reqs/base.txt:2"),
        ("peft", "matrix.yaml:9"),
    )
    assert cell.constraint_lines() == ("torch<2.6",)
    assert cell.declared("Transformers") == ("transformers==4.51.3", "reqs/base.txt:2")


def test_a_change_in_an_included_file_makes_the_lock_stale(tmp_path: Path) -> None:
    included = write(tmp_path / "r.txt", "transformers==4.51.3\n-c c.txt\n")
    constraints = write(tmp_path / "c.txt", "torch<2.6\n")
    path = matrix_file(tmp_path, "  - -r r.txt\n")
    before = inputs_digest(load_matrix(path).cells[0], "uv")
    constraints.write_text("torch<2.5\n")
    after_constraint = inputs_digest(load_matrix(path).cells[0], "uv")
    included.write_text("transformers==4.51.2\n-c c.txt\n")
    after_requirement = inputs_digest(load_matrix(path).cells[0], "uv")
    assert len({before, after_constraint, after_requirement}) == 3


def test_included_file_problems_name_the_matrix_entry_and_the_files_line(tmp_path: Path) -> None:
    write(tmp_path / "bad.txt", "peft\n-e .\n")
    write(tmp_path / "latin1.txt", b"peft\n\xff\n")
    write(tmp_path / "index.txt", "--extra-index-url https://download.pytorch.org/whl/cu121\n")
    path = matrix_file(
        tmp_path,
        "  - -r bad.txt\n  - -r missing.txt\n  - -c latin1.txt\n  - -r index.txt\n  - -x y\n",
    )
    with pytest.raises(InputError) as caught:
        load_matrix(path)
    lines = caught.value.message.splitlines()
    assert lines == [
        f"{path}:7:5: requirements[0]: bad.txt:2: editable requirement '-e .': an image "
        "installs locked distributions",
        f"{path}:8:5: requirements[1]: missing.txt: requirements file not found",
        f"{path}:9:5: requirements[2]: latin1.txt:2: byte 0xff is not UTF-8",
        f"{path}:10:5: requirements[3]: index.txt:1: --extra-index-url in a requirements file: "
        "a matrix's indexes are its `indexes` section",
        f"{path}:11:5: requirements[4]: unsupported entry '-x y' (expected a PEP 508 line, "
        "`-r FILE` or `-c FILE`)",
    ]
    assert "indexes.extra_index_urls" in (caught.value.hint or "")


def test_the_cli_exits_2_for_a_matrix_whose_r_entry_loops(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "a.txt", "-r b.txt\n")
    write(tmp_path / "b.txt", "-r a.txt\n")
    path = matrix_file(tmp_path, "  - -r a.txt\n")
    code, err = run_main("matrix", "-m", str(path), capsys=capsys)
    assert code == errors.INVALID_INPUT
    assert f"{path}:7:5: requirements[0]: b.txt:1: -r a.txt: an include loop" in err


# ---------------------------------------------------------------- the in-memory matrix


def test_the_one_cell_has_documented_defaults(tmp_path: Path) -> None:
    requirements = write(tmp_path / "requirements.txt", "peft\n")
    matrix = requirements_matrix([requirements])
    (cell,) = matrix.cells
    assert (cell.id, cell.base.image, cell.base.python) == ("py311-cpu", "scratch", "3.11")
    assert (cell.base.cuda, cell.base.platform, cell.gpu) == (None, "linux/amd64", "optional")
    assert cell.origins == (("peft", f"{requirements}:1"),)
    assert matrix.where(cell) == f"builder check -r {requirements} --python 3.11"


def test_the_base_options_name_the_cell(tmp_path: Path) -> None:
    requirements = write(tmp_path / "requirements.txt", "peft\n")
    matrix = requirements_matrix(
        [requirements], python="3.10", cuda="12.1", platform="linux/arm64", image="nvidia/cuda:x"
    )
    assert matrix.cells[0].id == "py310-cu121-arm64"
    assert matrix.where(matrix.cells[0]).endswith(
        "--python 3.10 --cuda 12.1 --platform linux/arm64 --base nvidia/cuda:x"
    )


def test_the_files_index_options_become_the_cells_indexes(tmp_path: Path) -> None:
    write(tmp_path / "wheels" / ".keep", "")
    requirements = write(
        tmp_path / "requirements.txt",
        "-i https://mirror.example/simple\n-f wheels\n-r more.txt\npeft\n",
    )
    write(tmp_path / "more.txt", "--extra-index-url https://download.pytorch.org/whl/cu121\n")
    indexes = requirements_matrix([requirements]).cells[0].indexes
    assert indexes.index_url == "https://mirror.example/simple"
    assert indexes.extra_index_urls == ("https://download.pytorch.org/whl/cu121",)
    assert indexes.wheelhouse == ((tmp_path / "wheels").resolve(),)


def test_bad_index_options_in_the_files_are_named_with_their_lines(tmp_path: Path) -> None:
    requirements = write(
        tmp_path / "requirements.txt",
        "-i https://a.example/simple\n-i https://b.example/simple\n"
        "--extra-index-url https://user:token@c.example/simple\n-f https://d.example/wheels\n",
    )
    with pytest.raises(InputError) as caught:
        requirements_matrix([requirements])
    assert caught.value.message.splitlines() == [
        f"{requirements}:2:1: --index-url: given twice (also at {requirements}:1)",
        f"{requirements}:3:1: --extra-index-url: credentials in the URL would be printed and "
        "written into the Dockerfile",
        f"{requirements}:4:1: --find-links: only a local directory is supported",
    ]


def test_every_bad_option_is_reported_at_once(tmp_path: Path) -> None:
    requirements = write(tmp_path / "requirements.txt", "peft\n")
    with pytest.raises(InputError) as caught:
        requirements_matrix(
            [requirements],
            image="a b",
            python="3.1O",
            cuda="12",
            platform="linux/arm",
            profiles=("wan2.3",),
            known_profiles=("wan2.1", "wan2.2"),
        )
    assert caught.value.message.splitlines() == [
        "--base 'a b': invalid image reference (expected like python:3.11)",
        "--python '3.1O': invalid Python version (expected like 3.11)",
        "--cuda '12': invalid CUDA version (expected like 12.1; none for CPU)",
        "--platform 'linux/arm': unsupported platform (did you mean 'linux/arm64'?)",
        "--profile 'wan2.3': unknown profile (did you mean 'wan2.2'?)",
    ]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-r", "r.txt", "-m", "matrix.yaml"], "-r and -m exclude each other"),
        (["-r", "r.txt", "--cell", "x"], "--cell selects a matrix's cells; -r makes one cell"),
        (["--python", "3.10"], "--python needs -r FILE"),
        (["--profile", "wan2.2"], "--profile needs -r FILE"),
        (["-r", "r.txt", "--profile", "wan2.3"], "--profile 'wan2.3': unknown profile"),
        (["-r", "missing.txt"], "missing.txt: requirements file not found"),
    ],
)
def test_check_option_mistakes_exit_2_with_a_clear_message(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    expected: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "r.txt", "peft\n")
    matrix_file(tmp_path, "  - peft\n")
    code, err = run_main("check", "--offline", *argv, capsys=capsys)
    assert code == errors.INVALID_INPUT
    assert expected in err


# ---------------------------------------------------------------- the same findings


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """The recorded index, and room for the seeded resolutions."""
    shutil.copytree(FIXTURES / "index", tmp_path / "cache")
    return tmp_path / "cache"


def seed(cache: Path, matrix: Matrix) -> None:
    """uv's recorded answer for the Wan2.2 seed, as the cached resolution of every cell."""
    body = RECORDED.read_text()
    for cell in matrix.cells:
        path = cache / "resolutions" / f"{inputs_digest(cell, 'uv')}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"ok": True, "body": body, "error": None}))


def check_json(cache: Path, *argv: str) -> tuple[int, list[dict[str, Any]]]:
    result = CliRunner().invoke(
        cli,
        ["check", *argv, "--offline", "--format", "json"],
        env={"BUILDER_METADATA_CACHE": str(cache)},
        standalone_mode=False,
    )
    assert result.exception is None, result.output
    (cell,) = json.loads(result.stdout)["cells"]
    return result.return_value, cell["findings"]


FILE_LINE = re.compile(r"[\w./-]+\.(?:txt|yaml):\d+")


def located(findings: list[dict[str, Any]], *places: str) -> list[dict[str, Any]]:
    """Findings with the places they name (any file:line, and `places`) made alike."""

    def alike(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        for place in places:
            value = value.replace(place, "<where>")
        return FILE_LINE.sub("<where>", value)

    return [{key: alike(value) for key, value in f.items()} for f in findings]


def test_check_r_gives_the_findings_of_the_equivalent_matrix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "requirements.txt", REQUIREMENTS)
    write(tmp_path / "more.txt", MORE)
    lines = [line for line in (REQUIREMENTS + MORE).splitlines() if line[:1] not in ("#", "-")]
    write(
        tmp_path / "matrix.yaml",
        "version: 1\nbases:\n  py310-cpu: {image: scratch, python: '3.10'}\n"
        "axes:\n  base: [py310-cpu]\nprofiles: [wan2.2]\nrequirements:\n"
        + "".join(f"  - {line}\n" for line in lines),
    )
    one_cell = requirements_matrix(
        [Path("requirements.txt")], python="3.10", profiles=["wan2.2"], known_profiles=["wan2.2"]
    )
    seed(cache, one_cell)
    seed(cache, load_matrix(Path("matrix.yaml")))

    code_r, from_files = check_json(
        cache, "-r", "requirements.txt", "--python", "3.10", "--profile", "wan2.2"
    )
    code_m, from_matrix = check_json(cache, "-m", "matrix.yaml")

    assert code_r == code_m == errors.CELLS_FAILED
    keys = ("severity", "code", "package", "message")
    assert [[f[k] for k in keys] for f in from_files] == [[f[k] for k in keys] for f in from_matrix]
    (range_finding,) = [f for f in from_files if f["code"] == "profile-range"]
    assert range_finding["package"] == "transformers"
    hint = range_finding["hint"]
    assert "change transformers==4.47.0 at requirements.txt:7 to transformers==4.51.3" in hint
    assert located(from_files, one_cell.where(one_cell.cells[0]), "the requirements") == located(
        from_matrix, "matrix.yaml:5", "the matrix `requirements`"
    )


def test_a_matrix_with_the_same_r_entry_names_the_same_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "requirements.txt", REQUIREMENTS)
    write(tmp_path / "more.txt", MORE)
    write(
        tmp_path / "matrix.yaml",
        "version: 1\nbases:\n  py310-cpu: {image: scratch, python: '3.10'}\n"
        "axes:\n  base: [py310-cpu]\nprofiles: [wan2.2]\nrequirements: [-r requirements.txt]\n",
    )
    one_cell = requirements_matrix(
        [Path("requirements.txt")], python="3.10", profiles=["wan2.2"], known_profiles=["wan2.2"]
    )
    matrix = load_matrix(Path("matrix.yaml"))
    assert matrix.cells[0].origins == one_cell.cells[0].origins
    assert inputs_digest(matrix.cells[0], "uv") == inputs_digest(one_cell.cells[0], "uv")
    seed(cache, matrix)
    _, from_files = check_json(
        cache, "-r", "requirements.txt", "--python", "3.10", "--profile", "wan2.2"
    )
    _, from_matrix = check_json(cache, "-m", "matrix.yaml")
    assert located(from_files, one_cell.where(one_cell.cells[0]), "the requirements") == located(
        from_matrix, "matrix.yaml:5", "the matrix `requirements`"
    )
