"""The probes' contract, run for real in bare venvs (no pip, no packaging, no network).

A venv made with ``--without-pip`` takes a fraction of a second; fake ``.dist-info`` folders in
its site-packages stand in for installed distributions, which is exactly what the probes read.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import packaging
import pytest

from builder import matrix
from builder.resources import GENERATE_VARIANTS, PROBES
from tests.conftest import NVIDIA, VALIDATE, run_probe_script


class Venv:
    def __init__(self, root: Path) -> None:
        venv.EnvBuilder(with_pip=False).create(root)
        self.python = root / "bin" / "python"
        purelib = subprocess.run(
            [self.python, "-I", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        )
        self.site = Path(purelib.stdout.strip())

    def add_dist(self, name: str, version: str, requires=(), files=(), top_level=None) -> None:
        """A fake installed distribution: METADATA, RECORD, optional top_level.txt and files."""
        info = self.site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
        (info / "METADATA").write_text(
            "\n".join(meta + [f"Requires-Dist: {r}" for r in requires]) + "\n"
        )
        for path, text in dict(files).items():
            (self.site / path).parent.mkdir(parents=True, exist_ok=True)
            (self.site / path).write_text(text)
        rows = [*dict(files), f"{info.name}/METADATA", f"{info.name}/RECORD"]
        (info / "RECORD").write_text("".join(f"{row},,\n" for row in rows))
        if top_level is not None:
            (info / "top_level.txt").write_text("".join(f"{t}\n" for t in top_level))

    def add_packaging(self) -> None:
        shutil.copytree(Path(packaging.__file__).parent, self.site / "packaging")


@pytest.fixture
def bare(tmp_path: Path) -> Venv:
    return Venv(tmp_path / "venv")


def run_probe(python: Path, name: str, options: dict | None, stdin: str = "") -> dict:
    """Run one probe as the runner does; check the one-JSON-last-line and exit-code contract."""
    result = run_probe_script(python, name, options, python.parent.parent, stdin)
    assert set(result) == {"probe", "status", "reason", "details", "evidence", "warnings"}
    assert len(result["evidence"]) <= 2000
    return result


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("imports", "pass"),
        ("numpy", "skipped"),
        ("pip-check", "pass"),
        ("lock-match", "error"),
        ("cuda", "skipped"),
        ("media", "skipped"),
        ("generate", "skipped"),
    ],
)
def test_every_probe_answers_with_one_json_line_in_an_empty_venv(
    bare: Venv, name: str, status: str
) -> None:
    assert run_probe(bare.python, name, {})["status"] == status


def test_options_are_read_from_stdin_when_no_file_is_given(bare: Venv) -> None:
    result = run_probe(bare.python, "cuda", None, stdin='{"gpu": "required"}')
    assert (result["status"], result["reason"]) == (
        "fail",
        "torch is not installed, but the cell requires a GPU",
    )


def test_a_probe_that_breaks_reports_error_with_its_traceback(bare: Venv, tmp_path: Path) -> None:
    result = run_probe(bare.python, "lock-match", {"lock": str(tmp_path / "no-such.lock")})
    assert result["status"] == "error"
    assert "FileNotFoundError" in result["reason"]
    assert "Traceback" in result["evidence"]


def assigned(script: str, name: str) -> ast.expr:
    """The value a probe file assigns to a module-level name, read without importing it."""
    tree = ast.parse((VALIDATE / script).read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == [name]:
            return node.value
    raise AssertionError(f"{script} assigns no {name}")


def test_probe_names_scripts_and_generate_variants_come_from_one_source() -> None:
    files = {path.name for path in VALIDATE.glob("*.py")} - {"_runner.py"}
    assert set(PROBES.values()) <= files, "a probe in builder.resources.PROBES has no script"
    assert files <= set(PROBES.values()), "a script in validate/ is not in PROBES"
    for name, script in PROBES.items():
        assert ast.literal_eval(assigned(script, "PROBE")) == name, script
    table = assigned("generate.py", "VARIANTS")
    assert isinstance(table, ast.Dict)
    assert tuple(ast.literal_eval(key) for key in table.keys if key) == GENERATE_VARIANTS
    assert tuple(PROBES) == matrix.PROBES
    assert tuple(name for name in PROBES if name != "model-dir") == matrix.DEFAULT_PROBES


def test_probes_import_only_the_standard_library_at_top_level() -> None:
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    for script in [*PROBES.values(), "_runner.py"]:
        tree = ast.parse((VALIDATE / script).read_text())
        for node in tree.body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = (
                    [node.module]
                    if isinstance(node, ast.ImportFrom)
                    else [a.name for a in node.names]
                )
                assert {n.split(".")[0] for n in names} <= stdlib, f"{script}: {names}"


@pytest.mark.parametrize("with_packaging", [False, True], ids=["stdlib", "packaging"])
def test_pip_check_finds_broken_requirements_from_metadata_alone(
    bare: Venv, with_packaging: bool
) -> None:
    bare.add_dist(
        "alpha",
        "1.0",
        requires=[
            "beta>=2",
            "gamma",
            'delta ; extra == "x"',
            'epsilon ; sys_platform == "nowhere"',
        ],
    )
    bare.add_dist("beta", "1.5")
    if with_packaging:
        bare.add_packaging()
        bare.add_dist("packaging", packaging.__version__)
    result = run_probe(bare.python, "pip-check", {})
    assert result["details"]["method"] == "metadata"
    problems = {
        (c["distribution"], c["requirement"], c["problem"]) for c in result["details"]["conflicts"]
    }
    assert problems == {
        ("alpha", "beta>=2", "beta 1.5 is installed"),
        ("alpha", "gamma", "not installed"),
    }
    assert result["status"] == "fail"
    assert (
        bool(result["warnings"]) is not with_packaging
    )  # markers unchecked only without packaging


def test_lock_match_reports_missing_extra_and_mismatched(bare: Venv, tmp_path: Path) -> None:
    for name, version in [("alpha", "1.0"), ("beta", "1.5"), ("omega", "0.1"), ("pip", "24.0")]:
        bare.add_dist(name, version)
    lock = tmp_path / "requirements.lock"
    lock.write_text("alpha==1.0 \\\n    --hash=sha256:aa\nbeta==2.0\nzeta==1.0\n    # via alpha\n")
    details = run_probe(bare.python, "lock-match", {"lock": str(lock)})["details"]
    assert details["missing"] == [{"name": "zeta", "locked": "1.0"}]
    assert details["extra"] == [{"name": "omega", "installed": "0.1"}]
    assert details["mismatched"] == [{"name": "beta", "locked": "2.0", "installed": "1.5"}]


def app_with(tmp_path: Path, **modules: str) -> Path:
    app = tmp_path / "app"
    app.mkdir()
    for name, source in modules.items():
        (app / f"{name}.py").write_text(source)
    return app


def test_imports_finds_the_locked_modules_and_classifies_their_failures(
    bare: Venv, tmp_path: Path
) -> None:
    files = {
        "goodpkg/__init__.py": "",
        "badmod.py": "import peft\n",
        "licensing/notes.md": "not a module",
    }
    bare.add_dist("good-dist", "1.0", files=files, top_level=["goodpkg", "badmod", "licensing"])
    lock = tmp_path / "requirements.lock"
    lock.write_text("good-dist==1.0\nnot-installed==2.0\n")
    result = run_probe(
        bare.python, "imports", {"lock": str(lock), "optional_imports": ["flash_attn"]}
    )
    modules = {m["module"]: (m["status"], m["class"]) for m in result["details"]["modules"]}
    assert modules == {
        "goodpkg": ("pass", None),
        "badmod": ("fail", "missing-module"),
        "not-installed": ("fail", "missing-module"),
        "flash_attn": ("warn", "missing-module"),
    }
    assert result["status"] == "fail"
    assert any("flash_attn" in w for w in result["warnings"])


@pytest.mark.parametrize(
    ("source", "klass"),
    [
        (f"raise RuntimeError({NVIDIA!r})\n", "gpu-at-import"),
        (
            "raise OSError('libGL.so.1: cannot open shared object file: No such file or directory')\n",
            "system-library",
        ),
        ("import ctypes\nctypes.string_at(0)\n", "crash"),
        ("import time\ntime.sleep(30)\n", "timeout"),
    ],
    ids=["gpu-at-import", "system-library", "crash", "timeout"],
)
def test_each_entry_module_imports_in_its_own_interpreter(
    bare: Venv, tmp_path: Path, source: str, klass: str
) -> None:
    app = app_with(tmp_path, broken=source, fine="VALUE = 1\n")
    options = {"app_path": str(app), "entry_modules": ["broken", "fine"], "module_timeout": 1}
    modules = {
        m["module"]: m for m in run_probe(bare.python, "imports", options)["details"]["modules"]
    }
    assert (modules["broken"]["status"], modules["broken"]["class"]) == ("fail", klass)
    assert modules["fine"]["status"] == "pass"


def test_generate_rejects_unknown_variants(bare: Venv) -> None:
    result = run_probe(bare.python, "generate", {"variants": ["wan9"]})
    assert result["status"] == "error"


def test_required_variants_fail_when_torch_is_missing(bare: Venv) -> None:
    result = run_probe(
        bare.python, "generate", {"variants": ["wan2.1"], "required_variants": ["wan2.1"]}
    )
    assert result["status"] == "fail"


def test_media_fails_when_a_required_library_is_missing(bare: Venv) -> None:
    result = run_probe(bare.python, "media", {"require": ["decord"]})
    assert result["status"] == "fail"
    assert result["details"]["decord_read"]["status"] == "skipped"


@pytest.mark.slow
def test_pip_check_through_pip_agrees_with_the_metadata_check(tmp_path: Path) -> None:
    root = tmp_path / "venv-with-pip"
    venv.EnvBuilder(with_pip=True).create(root)
    env = Venv.__new__(Venv)
    env.python, env.site = root / "bin" / "python", next(root.glob("lib/python3*/site-packages"))
    env.add_dist("alpha", "1.0", requires=["beta>=2", "gamma"])
    env.add_dist("beta", "1.5")
    by_pip = run_probe(env.python, "pip-check", {"method": "pip"})
    by_metadata = run_probe(env.python, "pip-check", {"method": "metadata"})
    assert by_pip["status"] == by_metadata["status"] == "fail"
    for conflict in by_pip["details"]["conflicts"]:
        del conflict["text"]
    assert by_pip["details"]["conflicts"] == by_metadata["details"]["conflicts"]


# --- the shared runner, validate/_runner.py ----------------------------------------------------

FAKE = """\
import importlib.util
import os
import sys
from pathlib import Path

PROBE = "fake"
DEFAULTS = {{"say": "hello", "n": 1}}
_RUNNER = importlib.util.spec_from_file_location("_runner", Path(__file__).with_name("_runner.py"))
runner = importlib.util.module_from_spec(_RUNNER)
_RUNNER.loader.exec_module(runner)
result = runner.results_for(PROBE)


def run(options):
{body}


if __name__ == "__main__":
    runner.main(PROBE, DEFAULTS, run)
"""


def fake_probe(tmp_path: Path, body: str) -> Path:
    """A probe whose run(options) is `body`, in a folder of its own next to the runner."""
    folder = tmp_path / "probes"
    folder.mkdir()
    shutil.copy(VALIDATE / "_runner.py", folder)
    script = folder / "fake.py"
    script.write_text(FAKE.format(body=textwrap.indent(body, "    ")))
    return script


def run_fake(script: Path, *args: str, stdin: str = "", flags=("-I",)) -> tuple[int, dict, str]:
    """(exit code, result, stderr) of a fake probe, checking that stdout is one JSON line."""
    argv = [sys.executable, *flags, str(script), *args]
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)
    assert len(proc.stdout.splitlines()) == 1, proc.stdout
    return proc.returncode, json.loads(proc.stdout), proc.stderr


ECHO = 'return result("pass", "echo", options)'


def test_the_runner_reads_options_from_a_file_over_the_probes_defaults(tmp_path: Path) -> None:
    options = tmp_path / "options.json"
    options.write_text('{"n": 2}')
    code, answer, _ = run_fake(fake_probe(tmp_path, ECHO), str(options))
    assert (code, answer["details"]) == (0, {"say": "hello", "n": 2})


@pytest.mark.parametrize("args", [(), ("-",)], ids=["no argument", "dash"])
def test_the_runner_reads_options_from_stdin_without_a_file(tmp_path: Path, args) -> None:
    code, answer, _ = run_fake(fake_probe(tmp_path, ECHO), *args, stdin='{"say": "hi"}')
    assert (code, answer["details"]) == (0, {"say": "hi", "n": 1})


def test_what_a_probe_prints_goes_to_stderr_and_stdout_keeps_one_json_line(
    tmp_path: Path,
) -> None:
    body = """\
print("chatter from a library")
os.write(1, b"chatter on fd 1\\n")
return result("fail", "first line\\nsecond line", {}, "x" * 3000, ["careful"])
"""
    code, answer, err = run_fake(fake_probe(tmp_path, body), "-")
    assert "chatter from a library" in err and "chatter on fd 1" in err
    assert (code, answer["probe"], answer["status"], answer["reason"]) == (
        1,
        "fake",
        "fail",
        "first line",
    )
    assert (len(answer["evidence"]), answer["warnings"]) == (2000, ["careful"])


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('raise RuntimeError("boom")', "probe raised RuntimeError: boom"),
        ("sys.exit(0)", "probe raised SystemExit: 0"),
    ],
    ids=["exception", "sys.exit"],
)
def test_a_probe_that_crashes_is_an_error_with_its_traceback_and_exit_2(
    tmp_path: Path, body: str, reason: str
) -> None:
    code, answer, _ = run_fake(fake_probe(tmp_path, body), "-")
    assert (code, answer["status"], answer["reason"]) == (2, "error", reason)
    assert "Traceback" in answer["evidence"]


def test_a_result_that_is_not_strict_json_is_an_error(tmp_path: Path) -> None:
    body = 'return result("pass", "not a number", {"x": float("nan")})'
    code, answer, _ = run_fake(fake_probe(tmp_path, body), "-")
    assert (code, answer["status"]) == (2, "error")
    assert answer["reason"].startswith("the result is not JSON")


def test_the_probes_folder_is_off_sys_path_even_without_isolated_mode(tmp_path: Path) -> None:
    script = fake_probe(tmp_path, 'return result("pass", "", {"path": sys.path})')
    _, answer, _ = run_fake(script, "-", flags=())
    assert str(script.parent) not in [
        str(Path(p or ".").resolve()) for p in answer["details"]["path"]
    ]


def test_the_model_dir_probe_answers_like_every_probe_and_exits_2_on_error(
    bare: Venv, tmp_path: Path
) -> None:
    assert run_probe(bare.python, "model-dir", None, stdin="{}")["status"] == "skipped"
    missing = {"model_dir": str(tmp_path / "no-such-model")}
    assert run_probe(bare.python, "model-dir", missing)["status"] == "error"  # exit 2, checked
