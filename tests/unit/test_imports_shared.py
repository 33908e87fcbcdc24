"""The imports probe's shared interpreter gives the same verdicts as one interpreter per module.

Every module is imported once in one child, in dependency order; a module that fails there, that
crashes or hangs it, or that comes after a warning the shared interpreter can print only once is
imported again alone. These tests run both modes on the failure fixtures and compare.
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import NVIDIA
from tests.unit.test_probes_classify import NUMPY_BANNER, load_probe
from tests.unit.test_probes_contract import Venv, run_probe

imports = load_probe("imports")

# Entry modules of an app, each a failure class (or a trap for a shared interpreter).
APP = {
    "fine": "VALUE = 1\n",
    "needs_peft": "import peft\n",
    "gated": (
        "raise ImportError('peft>=0.17.0 is required for a normal functioning of this module, "
        "but found peft==0.14.0.')\n"
    ),
    "gpu": f"raise RuntimeError({NVIDIA!r})\n",
    "syslib": (
        "raise OSError('libGL.so.1: cannot open shared object file: No such file or directory')\n"
    ),
    # imports with NumPy's banner on stderr (a warning), once per interpreter
    "abi_warn": f"import sys\nsys.stderr.write({NUMPY_BANNER!r})\n",
    # alone it prints the banner too; in a shared interpreter abi_warn is already imported
    "abi_user": "import abi_warn\n",
    "abi_fail": f"import sys\nsys.stderr.write({NUMPY_BANNER!r})\n"
    "raise AttributeError('_ARRAY_API not found')\n",
    # fails only where another module was imported first: alone it passes
    "order_sensitive": "import sys\nif 'fine' in sys.modules:\n    raise RuntimeError('x')\n",
    "zz_after": "VALUE = 2\n",
}
TRAPS = {
    "crash": "import ctypes\nctypes.string_at(0)\n",
    "hang": "import time\ntime.sleep(30)\n",
}


def verdicts(result: dict) -> dict[str, tuple[str, str | None, str]]:
    """{module: (status, class, the error's last line)} of an imports result."""
    return {
        m["module"]: (m["status"], m["class"], imports.runner.last_line(m["error"]))
        for m in result["details"]["modules"]
    }


def both_modes(python: Path, options: dict) -> tuple[dict, dict]:
    shared = run_probe(python, "imports", {**options, "mode": "shared"})
    alone = run_probe(python, "imports", {**options, "mode": "alone"})
    return shared, alone


def app_with(tmp_path: Path, modules: dict[str, str]) -> Path:
    app = tmp_path / "app"
    app.mkdir()
    for name, source in modules.items():
        (app / f"{name}.py").write_text(source)
    return app


def test_the_shared_interpreter_gives_each_failure_class_its_alone_verdict(
    tmp_path: Path,
) -> None:
    bare = Venv(tmp_path / "venv")
    app = app_with(tmp_path, APP)
    options = {"app_path": str(app), "entry_modules": sorted(APP), "module_timeout": 5}
    shared, alone = both_modes(bare.python, options)
    assert verdicts(shared) == verdicts(alone)
    assert shared["status"] == alone["status"] == "fail"
    classes = {name: klass for name, (_, klass, _) in verdicts(shared).items()}
    assert classes == {
        "fine": None,
        "needs_peft": "missing-module",
        "gated": "version-gate",
        "gpu": "gpu-at-import",
        "syslib": "system-library",
        "abi_warn": "numpy-abi",
        "abi_user": "numpy-abi",
        "abi_fail": "numpy-abi",
        "order_sensitive": None,
        "zz_after": None,
    }
    assert shared["warnings"] == alone["warnings"]


def test_a_crash_or_a_hang_in_the_shared_interpreter_costs_only_that_module(
    tmp_path: Path,
) -> None:
    bare = Venv(tmp_path / "venv")
    modules = {**TRAPS, "fine": "VALUE = 1\n", "zz_after": "VALUE = 2\n"}
    app = app_with(tmp_path, modules)
    options = {"app_path": str(app), "entry_modules": sorted(modules), "module_timeout": 1}
    shared, alone = both_modes(bare.python, options)
    assert verdicts(shared) == verdicts(alone)
    found = {name: (status, klass) for name, (status, klass, _) in verdicts(shared).items()}
    assert found == {
        "crash": ("fail", "crash"),
        "hang": ("fail", "timeout"),
        "fine": ("pass", None),
        "zz_after": ("pass", None),
    }
    assert shared["details"]["imported_alone"] == 2


def test_locked_distributions_import_once_in_the_shared_interpreter(tmp_path: Path) -> None:
    bare = Venv(tmp_path / "venv")
    bare.add_dist("low-dist", "1.0", files={"lowmod/__init__.py": "VALUE = 1\n"})
    bare.add_dist(
        "high-dist",
        "1.0",
        requires=["low-dist"],
        files={"aaa_high/__init__.py": "import lowmod\n", "badmod.py": "import peft\n"},
    )
    lock = tmp_path / "requirements.lock"
    lock.write_text("low-dist==1.0\nhigh-dist==1.0\nnot-installed==2.0\n")
    shared, alone = both_modes(bare.python, {"lock": str(lock)})
    assert verdicts(shared) == verdicts(alone)
    assert shared["details"]["imported_alone"] == 1  # badmod, which fails
    assert {m: s for m, (s, _, _) in verdicts(shared).items()} == {
        "aaa_high": "pass",
        "badmod": "fail",
        "lowmod": "pass",
        "not-installed": "fail",
    }


def test_distributions_are_ranked_after_what_they_require() -> None:
    ranks = imports.dependency_ranks()
    assert ranks["packaging"] < ranks["pytest"]
    assert ranks["pluggy"] < ranks["pytest"]
    assert ranks["markupsafe"] < ranks["jinja2"]


def test_import_order_puts_requirements_first_unknown_owners_next_and_the_app_last() -> None:
    targets = [
        imports.to_import("aaa_app", "app"),
        imports.to_import("aab_unknown", None),
        imports.to_import("aac_pytest", "pytest"),
        imports.to_import("zzz_packaging", "packaging"),
    ]
    ordered = [t["module"] for t in imports.import_order(targets)]
    assert ordered == ["zzz_packaging", "aac_pytest", "aab_unknown", "aaa_app"]
