"""`reuse_preinstalled` and `preinstalled: auto`: matrix keys, the lock's `# from base` marks,
the rendered venv, the lock-match probe's view of a reused base, check's conflict, and reading a
base's packages (fake engine; the real one is in tests/integration/test_reuse.py)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from builder import baseimage
from builder.check.rules import rule_preinstalled
from builder.engine import RunOutcome
from builder.errors import EngineUnavailable, InputError
from builder.lock import (
    inputs_digest,
    lock_cell,
    lock_path,
    mark_from_base,
    parse_lock,
    read_lock,
    write_inputs,
)
from builder.log import Log
from builder.matrix import parse_matrix
from builder.render import render_cell
from builder.settings import Settings
from tests.conftest import run_probe_script
from tests.unit.test_render import hadolint

HEAD = """\
version: 1
bases:
  torch-base:
    image: runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04
    python: "3.11"
    cuda: "12.4"
{base}
axes:
  base: [torch-base]
  transformers: ["4.51.3"]
requirements: [{requirements}]
"""
REUSED = "    preinstalled: [torch==2.4.0, numpy==1.26.4]\n    reuse_preinstalled: true"


def load(base: str = REUSED, requirements: str = "torch==2.4.0", path: Path | None = None):
    text = HEAD.format(base=base, requirements=requirements)
    return parse_matrix(text, path or Path("matrix.yaml"))


def problem(base: str) -> str:
    with pytest.raises(InputError) as caught:
        load(base)
    return caught.value.message


def pin(name: str, version: str, *via: str) -> str:
    notes = (
        f"    # via {via[0]}\n"
        if len(via) == 1
        else "    # via\n" + "".join(f"    #   {v}\n" for v in via)
    )
    return f"{name}=={version} \\\n    --hash=sha256:{'a' * 64}\n" + notes


# What uv writes for torch (reused), its CUDA wheels, and transformers beside it.
BODY = (
    pin("filelock", "3.16.1", "torch", "transformers")
    + pin("nvidia-cublas-cu12", "12.4.5.8", "torch")
    + pin("nvidia-cudnn-cu12", "9.1.0.70", "torch")
    + pin("mpmath", "1.3.0", "sympy")
    + pin("numpy", "1.26.4", "-c constraints.txt", "transformers")
    + pin("sympy", "1.13.1", "torch")
    + pin("torch", "2.4.0", "-c constraints.txt", "-r requirements.in")
    + pin("transformers", "4.51.3", "-r requirements.in")
)


def test_the_keys_are_read_and_isolation_stays_the_default() -> None:
    base = load().cells[0].base
    assert base.reuse_preinstalled and base.policy == "reused" and not base.preinstalled_auto
    assert base.preinstalled == (("torch", "2.4.0"), ("numpy", "1.26.4"))
    plain = load("    preinstalled: [torch==2.4.0]").cells[0].base
    assert plain.policy == "isolated" and not load("").cells[0].constraint_lines()
    auto = load("    preinstalled: auto\n    reuse_preinstalled: true").cells[0].base
    assert auto.preinstalled_auto and auto.preinstalled == ()


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        (
            "    reuse_preinstalled: yes-please",
            "matrix.yaml:7:25: bases.torch-base.reuse_preinstalled: expected true or false",
        ),
        ("    reuse_preinstalled: true", "nothing to reuse: declare `preinstalled`"),
        ("    preinstalled: automatic", "bases.torch-base.preinstalled: expected a list"),
        ("    preinstalled: [torch>=2.4]", "expected name==version, got 'torch>=2.4'"),
        ("    reuse_preinstaled: true", "reuse_preinstalled"),  # did you mean
    ],
)
def test_bad_reuse_keys_are_refused_with_their_place(base: str, expected: str) -> None:
    assert expected in problem(base)


def test_the_reused_packages_are_a_constraints_file_for_the_resolver(tmp_path: Path) -> None:
    write_inputs(tmp_path, load().cells[0])
    assert (tmp_path / "constraints.txt").read_text() == "torch==2.4.0\nnumpy==1.26.4\n"
    assert (tmp_path / "requirements.in").read_text().splitlines()[-1] == "-c constraints.txt"
    isolated = tmp_path / "isolated"
    isolated.mkdir()
    write_inputs(isolated, load("").cells[0])
    assert "-c" not in (isolated / "requirements.in").read_text()
    assert not (isolated / "constraints.txt").exists()


def test_the_base_and_what_only_it_needs_are_marked_from_base() -> None:
    marked = {p.name: p for p in parse_lock(mark_from_base(BODY, load().cells[0]))}
    from_base = {name for name, p in marked.items() if p.from_base}
    # torch and numpy are declared; the CUDA wheels and sympy only torch needs; mpmath only
    # sympy; filelock is needed by transformers too, so the venv gets its own.
    assert from_base == {
        "torch",
        "numpy",
        "nvidia-cublas-cu12",
        "nvidia-cudnn-cu12",
        "sympy",
        "mpmath",
    }
    assert "# from base (needed only by torch)\n" in marked["sympy"].block
    assert marked["torch"].block.endswith("    # from base\n")
    assert mark_from_base(BODY, load("").cells[0]) == BODY  # isolated: untouched


def test_a_reused_lock_says_so_and_its_digest_knows_the_versions(tmp_path: Path) -> None:
    class Fixed:
        name = "uv"

        def resolve(self, cell: Any, settings: Any, **_: Any) -> Any:
            from builder.lock import Resolution

            return Resolution(ok=True, body=BODY)

    matrix = load(path=tmp_path / "matrix.yaml")
    cell = matrix.cells[0]
    lock_cell(matrix, cell, Settings(), resolver=Fixed())
    lock = read_lock(lock_path(matrix, cell))
    assert lock is not None and "are reused: the venv sees them" in lock.header
    other = load(REUSED.replace("2.4.0", "2.4.1"), path=tmp_path / "matrix.yaml").cells[0]
    assert inputs_digest(other, "uv") != inputs_digest(cell, "uv")
    assert inputs_digest(load("").cells[0], "uv") != inputs_digest(cell, "uv")


def render(tmp_path: Path, base: str = REUSED) -> Path:
    matrix = load(base, path=tmp_path / "matrix.yaml")
    cell = matrix.cells[0]
    path = lock_path(matrix, cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(mark_from_base(BODY, cell))
    render_cell(matrix, cell, tmp_path / "out", Log(verbosity=-1))
    return tmp_path / "out" / cell.id


def test_the_venv_sees_the_base_and_no_layer_installs_what_it_provides(tmp_path: Path) -> None:
    context = render(tmp_path)
    dockerfile = (context / "Dockerfile").read_text()
    assert "-m venv --system-site-packages --without-pip /opt/venv" in dockerfile
    installed = "".join(p.read_text() for p in (context / "requirements").glob("*.txt"))
    assert "filelock==3.16.1" in installed and "transformers==4.51.3" in installed
    for name in ("torch==", "nvidia-cublas", "sympy==", "mpmath==", "numpy=="):
        assert name not in installed
    assert not (context / "requirements" / "heavy.txt").exists()
    assert "AS heavy" not in dockerfile


def test_a_reused_render_passes_hadolint(tmp_path: Path) -> None:
    dockerfile = render(tmp_path) / "Dockerfile"
    done = subprocess.run(
        [hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout


def _lock_match():
    path = Path(__file__).parents[2] / "validate" / "lock_match.py"
    spec = importlib.util.spec_from_file_location("lock_match_probe", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lock_match_names_the_drift_of_a_base_tag_that_moved(tmp_path: Path) -> None:
    probe = _lock_match()
    lock = tmp_path / "lock.txt"
    lock.write_text(mark_from_base(BODY, load().cells[0]))
    base = probe.from_base(str(lock))
    assert "torch" in base and "transformers" not in base
    pins = {"torch": "2.4.0", "nvidia-cublas-cu12": "12.4.5.8", "transformers": "4.51.3"}
    found = probe.compare(pins, {"torch": "2.4.1", "transformers": "4.51.3"})
    named = [probe.named_drift(d, base) for d in found["mismatched"] + found["missing"]]
    assert named == [
        "torch: lock 2.4.0, the base carries 2.4.1",
        "nvidia-cublas-cu12: lock 12.4.5.8, the base does not carry it",
    ]


def test_lock_match_counts_a_reused_base_by_where_each_package_lives(tmp_path: Path) -> None:
    """For real: a venv over this machine's system Python (its Debian packages are "the base"),
    with one package of its own that the lock does not pin."""
    venv = tmp_path / "venv"
    subprocess.run(
        ["/usr/bin/python3", "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        check=True,
    )
    site = next((venv / "lib").glob("python3.*/site-packages"))
    (site / "own-1.0.dist-info").mkdir()
    (site / "own-1.0.dist-info" / "METADATA").write_text("Name: own\nVersion: 1.0\n")
    lock = tmp_path / "lock.txt"
    lock.write_text("")
    python = venv / "bin" / "python"
    reused = run_probe_script(python, "lock-match", {"lock": str(lock), "reused": True}, tmp_path)
    isolated = run_probe_script(python, "lock-match", {"lock": str(lock)}, tmp_path)
    extra = {e["name"] for e in isolated["details"]["extra"]}
    assert {e["name"] for e in reused["details"]["extra"]} == {"own"}  # the venv's own
    assert reused["details"]["base_only"] == len(extra - {"own"}) > 0
    assert "own" in extra and reused["status"] == isolated["status"] == "fail"


class Context:
    """What rule_preinstalled reads."""

    def __init__(self, cell: Any, versions: dict[str, Any] | None = None) -> None:
        self.cell, self.versions, self.where = cell, versions or {}, "matrix.yaml:12"

    def markers(self) -> dict[str, str]:
        return {"sys_platform": "linux", "python_version": "3.11", "platform_machine": "x86_64"}


def test_check_errors_when_a_pin_excludes_what_the_reused_base_carries() -> None:
    cell = load(requirements="torch==2.4.1").cells[0]
    (finding,) = rule_preinstalled(Context(cell))  # type: ignore[arg-type]
    assert finding.severity == "error" and finding.code == "reused-conflict"
    assert "torch==2.4.1" in finding.message and "torch 2.4.0" in finding.message
    assert "torch==2.4.0" in finding.hint and "reuse_preinstalled: false" in finding.hint
    assert not list(rule_preinstalled(Context(load().cells[0])))  # type: ignore[arg-type]


class ListingEngine:
    """An engine whose base image lists its packages (or fails to)."""

    name = "fake"

    def __init__(self, listing: Any, exit_code: int = 0, image_id: str = "sha256:" + "1" * 64):
        self.listing, self.exit_code, self.image_id = listing, exit_code, image_id
        self.runs: list[list[str]] = []

    def inspect(self, image: str, *, pull: bool = False) -> dict[str, Any]:
        return {"Id": self.image_id}

    def run(self, image: str, argv: list[str], **options: Any) -> RunOutcome:
        self.runs.append(argv)
        out = json.dumps(self.listing) if self.exit_code == 0 else ""
        return RunOutcome(self.exit_code, "noise\n" + out, "no python3.11 here", 0.1)


AUTO = "    preinstalled: auto\n    reuse_preinstalled: true"


def test_auto_reads_the_base_once_per_image_id_first_copy_winning(tmp_path: Path) -> None:
    matrix = load(AUTO)
    listing = [["Torch", "2.4.0"], ["numpy", "1.26.4"], ["torch", "2.3.0"], ["odd", "not-pep440"]]
    engine = ListingEngine(listing)
    assert baseimage.needs_reading(matrix.cells)
    read = baseimage.read_auto(matrix, matrix.cells, engine, tmp_path)  # type: ignore[arg-type]
    assert read.cells[0].base.preinstalled == (("numpy", "1.26.4"), ("torch", "2.4.0"))
    assert read.bases[0] is read.cells[0].base and not baseimage.needs_reading(read.cells)
    assert engine.runs[0][:2] == ["python3.11", "-I"]
    baseimage.read_auto(matrix, matrix.cells, engine, tmp_path)  # type: ignore[arg-type]
    assert len(engine.runs) == 1  # cached by image id
    moved = ListingEngine(listing, image_id="sha256:" + "2" * 64)
    baseimage.read_auto(matrix, matrix.cells, moved, tmp_path)  # type: ignore[arg-type]
    assert len(moved.runs) == 1  # a moved tag is another image: read again


def test_a_base_that_cannot_list_its_packages_is_bad_input_naming_it(tmp_path: Path) -> None:
    matrix = load(AUTO)
    with pytest.raises(InputError) as caught:
        baseimage.read_auto(matrix, matrix.cells, ListingEngine([], 127), tmp_path)  # type: ignore[arg-type]
    assert "bases.torch-base.preinstalled: auto" in caught.value.message
    assert "no python3.11 here" in caught.value.message


def test_auto_without_an_engine_is_exit_3_and_venv_engine_is_exit_2(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    (tmp_path / "matrix.yaml").write_text(HEAD.format(base=AUTO, requirements="six"))
    env = {"DOCKER_HOST": f"unix://{tmp_path}/none.sock"}
    done = run_cli("lock", "-m", str(tmp_path / "matrix.yaml"), env=env)
    assert done.code == EngineUnavailable.exit_code, done.err
    done = run_cli("validate", "--engine", "venv", "-m", str(tmp_path / "matrix.yaml"), env=env)
    assert done.code == 2 and "preinstalled: auto" in done.err
