"""`image:` and `steps:`: validation, their place in the rendered Dockerfile, hadolint."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from builder.errors import InputError
from builder.log import Log
from builder.matrix import Healthcheck, ImageConfig, Step, load_matrix, parse_matrix
from builder.render import env_quote, exec_form, failed_step, render_cell
from tests.conftest import FIXTURES
from tests.unit.test_render import hadolint

SERVING = FIXTURES / "serving"
HEAD = """\
version: 1
bases:
  cpu: {image: debian:bookworm, python: "3.11"}
axes: {base: [cpu]}
"""


def load(text: str):
    return parse_matrix(HEAD + text, Path("matrix.yaml"))


def problems(text: str) -> str:
    with pytest.raises(InputError) as caught:
        load(text)
    return caught.value.message


@pytest.fixture
def dockerfile(tmp_path: Path) -> str:
    matrix = load_matrix(SERVING / "matrix.yaml")
    render_cell(matrix, matrix.cells[0], tmp_path, Log(verbosity=-1))
    return (tmp_path / matrix.cells[0].id / "Dockerfile").read_text()


def stage(text: str, name: str) -> str:
    """The lines of one stage, from its FROM to the next."""
    start = text.index(f" AS {name}\n")
    end = text.find("\nFROM ", start)
    return text[start : end if end >= 0 else None]


def test_every_image_key_is_read_into_frozen_data() -> None:
    cell = load_matrix(SERVING / "matrix.yaml").cells[0]
    assert cell.image == ImageConfig(
        env=(
            ("HF_HOME", "/data/hf"),
            ("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True"),
            ("QUOTED", 'say "hi" \\ $HOME'),
            ("N", "3"),
        ),
        workdir="/srv/worker",
        entrypoint=("/usr/bin/env", "--"),
        cmd=("python", "-u", "handler.py"),
        expose=(8000, 9090),
        user="worker",
        healthcheck=Healthcheck(
            cmd=("python", "-c", "import handler"), interval="30s", timeout="10s", retries=3
        ),
    )
    assert [(s.name, s.at, s.secrets) for s in cell.steps] == [
        ("mark-apt", "after-apt", ()),
        ("warm-deps", "after-deps", ("cacert",)),
        ("patch-app", "after-app", ("netrc", "hf_token")),
    ]


def test_a_matrix_without_image_or_steps_gets_the_empty_defaults() -> None:
    cell = load("").cells[0]
    assert cell.image == ImageConfig() and cell.steps == ()


def test_a_step_may_use_any_one_line_shell_including_substitutions() -> None:
    steps = load('steps:\n  - {name: a, at: after-app, run: "echo $(date) ${HOME} `id`"}')
    assert steps.cells[0].steps == (
        Step(name="a", at="after-app", run="echo $(date) ${HOME} `id`"),
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("image: {env: {A: '${X}'}}", "5:18: image.env.A: unsafe value"),
        ("image: {entrypoint: []}", "5:21: image.entrypoint: expected a non-empty list"),
        ("image: {expose: ['80']}", "5:18: image.expose[0]: expected a whole number"),
        ("image: {expose: [0x50]}", "5:18: image.expose[0]: expected a whole number"),
        ("image: {user: Worker}", "5:15: image.user: invalid user name 'Worker'"),
        ("image: {healthcheck: {cmd: [x], retries: 0}}", "healthcheck.retries: 0 is out of range"),
        ("image: [env]", "5:8: image: expected a mapping"),
        ("steps: {name: a}", "5:8: steps: expected a list"),
        ("steps:\n  - {name: a, at: after-app, run: 'make \\'}", "trailing backslash"),
        ("steps:\n  - {name: a, at: after-app, run: '  '}", "steps[0].run: unsafe or empty"),
        ("steps:\n  - {name: a, at: after-app, run: 'x', secrets: cacert}", "expected a list"),
        ("steps:\n  - {name: a, at: after-app, run: 'x', when: always}", "steps[0].when: unknown"),
    ],
)
def test_bad_image_and_step_values_are_refused_with_their_place(text: str, expected: str) -> None:
    assert expected in problems(text)


def test_every_problem_is_reported_at_once() -> None:
    message = problems("image: {user: root, workdir: rel}\nsteps:\n  - {at: nowhere}")
    for fragment in ("image.user", "image.workdir", "steps[0].name", "steps[0].at", "steps[0].run"):
        assert fragment in message


def test_env_values_stay_literal_and_exec_forms_are_json() -> None:
    assert env_quote('a "b" \\ $HOME') == '"a \\"b\\" \\\\ \\$HOME"'
    assert exec_form(["python", "-c", 'print("hi")']) == '["python","-c","print(\\"hi\\")"]'
    assert json.loads(exec_form(["é", "a b"])) == ["é", "a b"]


def test_the_final_stage_sets_what_the_image_runs_with_user_last(dockerfile: str) -> None:
    final = stage(dockerfile, "final")
    tail = final[final.index('ENV \\\n    HF_HOME="/data/hf"') :]
    assert tail.splitlines()[:6] == [
        "ENV \\",
        '    HF_HOME="/data/hf" \\',
        '    PYTORCH_CUDA_ALLOC_CONF="expandable_segments:True" \\',
        '    QUOTED="say \\"hi\\" \\\\ \\$HOME" \\',
        '    N="3"',
        "WORKDIR /srv/worker",
    ]
    for line in (
        "EXPOSE 8000 9090",
        'HEALTHCHECK --interval=30s --timeout=10s --retries=3 CMD ["python","-c","import handler"]',
        'ENTRYPOINT ["/usr/bin/env","--"]',
        'CMD ["python","-u","handler.py"]',
        "chown -R worker:worker /srv/worker",
    ):
        assert line in final
    assert final.rstrip().splitlines()[-1] == "USER 10001:10001"
    assert final.count("\nUSER ") == 1


def test_each_step_is_a_named_run_in_the_stage_where_it_belongs(dockerfile: str) -> None:
    base, final = stage(dockerfile, "base"), stage(dockerfile, "final")
    assert "# step mark-apt (at after-apt)\nRUN : step=mark-apt; echo apt" in base
    deps = final.index("# step warm-deps (at after-deps)")
    app = final.index("COPY app/ /app/")
    patch = final.index("# step patch-app (at after-app)")
    assert final.rindex("COPY --from=") < deps < app < patch < final.index("WORKDIR /srv/worker")


def test_layer_stages_do_not_contain_the_later_steps(dockerfile: str) -> None:
    for name in ("venv", "heavy", "rest", "pins"):
        assert "step=" not in stage(dockerfile, name)


def test_a_step_mounts_only_the_secrets_it_names(dockerfile: str) -> None:
    runs = {
        name: dockerfile[dockerfile.index(f"# step {name} ") :].split("\n\n")[0]
        for name in ("mark-apt", "warm-deps", "patch-app")
    }
    assert "--mount" not in runs["mark-apt"]
    assert "--mount=type=secret,id=cacert \\" in runs["warm-deps"]
    assert "netrc" not in runs["warm-deps"] and "hf_token" not in runs["warm-deps"]
    assert "id=netrc,target=/root/.netrc" in runs["patch-app"]
    assert "id=hf_token" in runs["patch-app"] and "cacert" not in runs["patch-app"]


def test_a_render_with_every_key_passes_hadolint(tmp_path: Path) -> None:
    matrix = load_matrix(SERVING / "matrix.yaml")
    render_cell(matrix, matrix.cells[0], tmp_path, Log(verbosity=-1))
    done = subprocess.run(
        [hadolint(), "--no-color", str(tmp_path / matrix.cells[0].id / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout


def test_the_failed_step_is_read_from_buildkits_log() -> None:
    tail = (
        "#12 [final 6/9] RUN : step=patch-app; exit 3\n"
        "#12 ERROR: executor failed running [/bin/sh -eu -c : step=patch-app; exit 3]: "
        "exit code: 3\n------\n > [final 6/9] RUN : step=patch-app; exit 3:\n------\n"
        "error: failed to solve: exit code: 3"
    )
    assert failed_step(tail) == "patch-app"
    assert failed_step("#9 [pins 3/3] RUN pip install\nerror: failed to solve") is None
    assert failed_step("#8 [final 5/9] RUN : step=ok-step; true\n#8 DONE 0.1s\nerror: x") is None
