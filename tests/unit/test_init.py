"""`builder init`: Dockerfiles and requirements files translated into a matrix that loads,
renders and, checked, finds what each fixture plants.

The fixtures under tests/fixtures/dockerfiles/ are community-worker Dockerfiles; each case.yaml
says what is planted (the finding `builder check` must report) and what cannot be translated
(with its line). `check` runs offline: uv's resolutions and the index metadata were recorded
by tests/fixtures/dockerfiles/record.py. Git is never asked about the network here: a fake
resolver refuses, and the one real `git ls-remote` reads a local file:// repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from builder.check import Options, check_cells
from builder.errors import InputError
from builder.init import InitOptions, InitResult, draft, run_init
from builder.init.basefacts import facts_for
from builder.init.gitref import ls_remote
from builder.lock import Resolution, inputs_digest
from builder.log import Log
from builder.matrix import Cell, load_matrix, parse_matrix
from builder.profiles import load_profiles
from builder.render import render_cell
from builder.settings import Settings
from tests.conftest import run_cli

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "dockerfiles"
CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "case.yaml").is_file())
GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="git is not installed")


def no_network(url: str, ref: str | None) -> tuple[str | None, str]:
    return None, "no network in unit tests"


def spec(case: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((FIXTURES / case / "case.yaml").read_text())
    return data


@contextmanager
def inside(directory: Path) -> Iterator[None]:
    """Run in `directory`, as a user who names the Dockerfile next to them would."""
    before = Path.cwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(before)


def copy_case(case: str, tmp_path: Path) -> Path:
    into = tmp_path / "case"
    shutil.copytree(FIXTURES / case, into, ignore=shutil.ignore_patterns("resolved", "case.yaml"))
    return into


def init_case(case: str, tmp_path: Path) -> tuple[InitResult, Path]:
    """`builder init` as case.yaml says, in a copy of the case; (result, matrix path)."""
    where = copy_case(case, tmp_path)
    options = InitOptions(
        dockerfiles=tuple(spec(case)["dockerfiles"]),
        profiles=tuple(spec(case)["profiles"]),
        output=Path("matrix.yaml"),
    )
    with inside(where):
        result = run_init(options, no_network)
    return result, where / "matrix.yaml"


def recorded(case: str) -> Any:
    def resolver(cell: Cell, settings: Settings, offline: bool) -> Resolution:
        body = FIXTURES / case / "resolved" / f"{cell.id}.txt"
        if body.is_file():
            return Resolution(ok=True, body=body.read_text())
        error = FIXTURES / case / "resolved" / f"{cell.id}.error"
        return Resolution(ok=False, error=error.read_text())

    return resolver


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """The recorded index, copied where check keeps its metadata."""
    return shutil.copytree(FIXTURES / "index", tmp_path / "cache")


def dockerfile(tmp_path: Path, text: str, **files: str) -> Path:
    """A Dockerfile (and files of its build context) in tmp_path."""
    for name, content in files.items():
        path = tmp_path / name.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    (tmp_path / "Dockerfile").write_text(text)
    return tmp_path / "Dockerfile"


def translate(tmp_path: Path, text: str, **files: str) -> tuple[InitResult, dict[str, Any]]:
    """Init on one Dockerfile; the result and the matrix as data."""
    dockerfile(tmp_path, text, **files)
    with inside(tmp_path):
        result = draft(InitOptions(dockerfiles=("Dockerfile",)), no_network)
    return result, yaml.safe_load(result.text)


def constructs(result: InitResult) -> list[tuple[int, str]]:
    return [(u.source.line, u.construct) for u in result.untranslated]


# ---------------------------------------------------------------- the fixtures


@pytest.mark.parametrize("case", CASES)
def test_each_fixture_becomes_a_matrix_that_loads_and_renders(case: str, tmp_path: Path) -> None:
    _, path = init_case(case, tmp_path)
    matrix = load_matrix(path)
    assert matrix.cells
    for cell in matrix.cells:
        written = render_cell(matrix, cell, tmp_path / "build", Log(verbosity=-1))
        assert written.dockerfile.read_text().startswith("# Rendered by builder")


@pytest.mark.parametrize("case", CASES)
def test_builder_check_finds_what_each_fixture_plants(
    case: str, tmp_path: Path, cache: Path
) -> None:
    _, path = init_case(case, tmp_path)
    matrix = load_matrix(path)
    options = Options(
        settings=Settings(metadata_cache=cache), offline=True, resolver=recorded(case)
    )
    findings = [f for r in check_cells(matrix, matrix.cells, options) for f in r.findings]
    found = {(f.code, f.package, f.severity) for f in findings}
    for plant in spec(case)["plants"]:
        want = plant["finding"]
        assert (want["code"], want["package"], want["severity"]) in found, (plant["what"], found)
    if not spec(case)["plants"]:
        assert not [f for f in findings if f.severity == "error"], findings


@pytest.mark.parametrize("case", CASES)
def test_each_untranslatable_construct_is_listed_with_its_line(case: str, tmp_path: Path) -> None:
    result, _ = init_case(case, tmp_path)
    listed = [(u.source.file, u.source.line, u.construct) for u in result.untranslated]
    for want in spec(case)["untranslated"]:
        file = want.get("file", "Dockerfile")
        hits = [c for f, line, c in listed if f == file and line == want["line"]]
        assert any(want["construct"] in c for c in hits), (want, listed)
    for want in spec(case).get("warnings", []):
        assert any(
            w.source and w.source.line == want["line"] and want["message"] in w.message
            for w in result.warnings
        ), result.warnings


def test_every_translated_line_names_its_source_and_guesses_say_so(tmp_path: Path) -> None:
    _, path = init_case("wan-s2v-runpod", tmp_path)
    lines = path.read_text().splitlines()
    assert '  transformers: ["4.47.0"]  # requirements.txt:2 (via Dockerfile:21)' in lines
    assert '    python: "3.11"  # Dockerfile:5; from the tag; verify' in lines
    assert "      - torch==2.4.0  # Dockerfile:5; from the tag; verify" in lines
    assert "  - numpy>=1.26.4  # Dockerfile:26; a soft install in the Dockerfile" in lines
    assert '  cmd: ["python", "-u", "handler.py"]  # Dockerfile:35' in lines
    values = [line.strip() for line in lines if line.startswith(" ") and not line.endswith(":")]
    bare = [line for line in values if "#" not in line]
    assert bare and all(line.startswith(("base: [", "at: ", "run: ", "secrets: ")) for line in bare)


def test_the_same_inputs_give_the_same_file(tmp_path: Path) -> None:
    first, _ = init_case("multitalk-runtime", tmp_path / "a")
    second, _ = init_case("multitalk-runtime", tmp_path / "b")
    assert first.text == second.text


def test_the_s2v_worker_translates_env_cmd_app_and_steps(tmp_path: Path) -> None:
    _, path = init_case("wan-s2v-runpod", tmp_path)
    data = yaml.safe_load(path.read_text())
    assert data["image"]["env"]["HF_HOME"] == "/runpod-volume/hf"
    assert data["image"]["cmd"] == ["python", "-u", "handler.py"]
    assert data["image"]["workdir"] == "/app" and data["image"]["expose"] == [8000]
    assert data["app"] == {"path": "src", "files": ["handler.py"]}
    assert data["bases"]["runpod-cu124-py311"]["apt"][:3] == ["git", "wget", "ffmpeg"]
    steps = {s["name"]: s for s in data["steps"]}
    assert steps["huggingface-cli-download"]["secrets"] == ["hf_token"]
    assert steps["python-apply-patches"] == {
        "name": "python-apply-patches",
        "at": "after-app",
        "run": "python patches/apply_patches.py",
    }


def test_an_uninstall_then_reinstall_across_run_lines_is_one_pin(tmp_path: Path) -> None:
    result, path = init_case("multitalk-runtime", tmp_path)
    data = yaml.safe_load(path.read_text())
    assert data["axes"]["torch"] == ["2.5.1"]
    assert "torchvision==0.20.1" in data["requirements"]
    assert not [r for r in data["requirements"] if r.startswith("torch==")]
    (note,) = [u for u in result.untranslated if u.construct.startswith("pip uninstall")]
    assert note.source.line == 17 and "Dockerfile:16" in note.construct
    assert "reinstalled after the pip uninstall at Dockerfile:16" in path.read_text()


def test_a_source_build_on_a_runtime_base_is_a_warning(tmp_path: Path) -> None:
    result, _ = init_case("multitalk-runtime", tmp_path)
    (warning,) = [w for w in result.warnings if "no nvcc" in w.message]
    assert warning.source is not None and warning.source.line == 22


# ---------------------------------------------------------------- base facts


@pytest.mark.parametrize(
    ("image", "python", "cuda", "torch", "kind"),
    [
        (
            "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04",
            "3.11",
            "12.4",
            "2.4.0",
            "devel",
        ),
        ("runpod/pytorch:1.0.2-cu1281-torch280-ubuntu2404", "3.12", "12.8", "2.8.0", None),
        ("runpod/pytorch:0.7.0-dev-cu1241-torch240-ubuntu2204", "3.10", "12.4", "2.4.0", None),
        ("nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04", "3.10", "12.4", None, "devel"),
        ("nvidia/cuda:12.1.1-cudnn8-runtime-ubuntu22.04", "3.10", "12.1", None, "runtime"),
        ("pytorch/pytorch:2.4.1-cuda12.4-cudnn9-runtime", "3.11", "12.4", "2.4.1", "runtime"),
        ("pytorch/pytorch:2.1.0-cuda12.1-cudnn8-devel", "3.10", "12.1", "2.1.0", "devel"),
        ("docker.io/library/python:3.11-slim", "3.11", None, None, None),
        ("ubuntu:24.04", "3.12", None, None, None),
    ],
)
def test_base_facts_come_from_the_tag_patterns(
    image: str, python: str, cuda: str | None, torch: str | None, kind: str | None
) -> None:
    facts = facts_for(image)
    assert (facts.python, facts.cuda, facts.torch, facts.kind) == (python, cuda, torch, kind)


def test_an_unknown_base_is_written_with_a_warning(tmp_path: Path) -> None:
    result, data = translate(tmp_path, "FROM acme/serving:7\nRUN pip install peft\n")
    base = data["bases"]["acme-py311"]
    assert base["python"] == "3.11" and base.get("cuda") is None
    assert [w.message for w in result.warnings if "could not tell" in w.message]


# ---------------------------------------------------------------- RUN lines


def test_run_lines_are_split_into_commands_by_the_shell_parser(tmp_path: Path) -> None:
    text = (
        "FROM nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends \\\n"
        "      python3.11 ffmpeg libgl1 ; \\\n"
        "    rm -rf /var/lib/apt/lists/* && apt-get clean\n"
        "RUN python3.11 -m pip install 'transformers==4.51.3' | tee /tmp/pip.log\n"
        "RUN pip3 install peft && mkdir -p /cache || echo no-cache\n"
        "RUN uv pip install --system einops; echo done\n"
    )
    result, data = translate(tmp_path, text)
    base = data["bases"]["nvidia-cu124-py311"]
    assert base["apt"] == ["python3.11", "ffmpeg", "libgl1"] and base["python"] == "3.11"
    assert data["axes"]["transformers"] == ["4.51.3"]
    assert data["requirements"] == ["peft", "einops"]
    assert [s["run"] for s in data["steps"]] == ["mkdir -p /cache || echo no-cache"]
    soft = [c for line, c in constructs(result) if line == 5]
    assert soft and "a pipe after it" in soft[0]


def test_soft_installs_become_hard_requirements_with_a_note(tmp_path: Path) -> None:
    text = 'FROM python:3.11-slim\nRUN pip install "numpy>=1.26.4" || echo "numpy failed"\n'
    result, data = translate(tmp_path, text)
    assert data["requirements"] == ["numpy>=1.26.4"] and "steps" not in data
    (note,) = result.untranslated
    assert note.source.line == 2 and "`|| echo" in note.construct
    assert note.instead.startswith("hard requirements")


def test_a_run_bashlex_cannot_parse_stays_a_step_as_written(tmp_path: Path) -> None:
    text = "FROM python:3.11-slim\nRUN [[ -f /etc/os-release ]] && pip install peft\n"
    result, data = translate(tmp_path, text)
    assert data["steps"] == [
        {
            "name": "line-2",
            "at": "after-apt",
            "run": "[[ -f /etc/os-release ]] && pip install peft",
        }
    ]
    (note,) = result.untranslated
    assert "bashlex cannot parse" in note.construct and "step line-2" in note.instead


def test_a_sequential_upgrade_after_pins_becomes_one_joint_resolution(tmp_path: Path) -> None:
    text = "FROM python:3.11-slim\nRUN pip install torch==2.4.1\nRUN pip install -U xformers\n"
    result, data = translate(tmp_path, text)
    assert data["axes"]["torch"] == ["2.4.1"] and data["requirements"] == ["xformers"]
    assert any(
        line == 3 and "joint resolution" in u.instead
        for u in result.untranslated
        for line in [u.source.line]
    )


def test_a_later_install_of_a_name_replaces_the_earlier_pin(tmp_path: Path) -> None:
    text = "FROM python:3.11-slim\nRUN pip install diffusers==0.31.0\nRUN pip install diffusers==0.35.1\n"
    result, data = translate(tmp_path, text)
    assert data["axes"]["diffusers"] == ["0.35.1"]
    assert [line for line, c in constructs(result) if "installed again" in c] == [3]


def test_index_urls_find_links_and_requirement_files_are_read(tmp_path: Path) -> None:
    text = (
        "FROM python:3.11-slim\n"
        "COPY requirements.txt wheels/ /opt/build/\n"
        "RUN pip install --extra-index-url https://download.pytorch.org/whl/cu124 torch==2.5.1\n"
        "RUN pip install -r /opt/build/requirements.txt -f /opt/build --no-deps\n"
    )
    wheel = "flash_attn-2.7.4.post1-cp311-cp311-linux_x86_64.whl"
    files = {
        "requirements.txt": "-r base.txt\n-c constraints.txt\nflash-attn==2.7.4.post1\n",
        "base.txt": "peft\n-e .\n",
        "constraints.txt": "numpy<2\n",
        f"wheels__{wheel}": "",
    }
    (tmp_path / "base.txt").parent.mkdir(exist_ok=True)
    result, data = translate(tmp_path, text, **files)
    assert data["indexes"]["extra_index_urls"] == ["https://download.pytorch.org/whl/cu124"]
    assert data["requirements"] == ["flash-attn==2.7.4.post1", "peft", "numpy<2"]
    assert "app" not in data  # only pip's files were copied
    listed = constructs(result)
    assert (2, "a requirements line") in [(line, c) for line, c in listed if line == 2]
    assert any("the constraint numpy<2" in c for _, c in listed)
    assert any("--no-deps" in c for _, c in listed)


def test_a_local_wheel_directory_becomes_a_wheelhouse(tmp_path: Path) -> None:
    wheel = "flash_attn-2.7.4.post1-cp311-cp311-linux_x86_64.whl"
    text = f"FROM python:3.11-slim\nCOPY wheels/ /wheels/\nRUN pip install /wheels/{wheel}\n"
    _, data = translate(tmp_path, text, **{f"wheels__{wheel}": ""})
    assert data["indexes"]["wheelhouse"] == ["wheels"]
    assert data["requirements"] == ["flash-attn==2.7.4.post1"]


def test_an_index_url_every_install_uses_becomes_the_index(tmp_path: Path) -> None:
    text = "FROM python:3.11-slim\nRUN pip install -i https://mirror.example/simple peft\n"
    _, data = translate(tmp_path, text)
    assert data["indexes"] == {"index_url": "https://mirror.example/simple"}


def test_build_arguments_are_expanded_in_installs_and_exported_to_steps(tmp_path: Path) -> None:
    text = (
        "ARG TORCH=2.4.1\n"
        "FROM python:3.11-slim\n"
        "ARG TORCH\n"
        "ARG FLAVOR=cu124\n"
        'RUN pip install torch==${TORCH} "xformers==$XF" && echo $FLAVOR > /flavor\n'
    )
    result, data = translate(tmp_path, text)
    assert data["axes"]["torch"] == ["2.4.1"] and data["requirements"] == []
    assert data["steps"][0]["run"] == "export FLAVOR=cu124 && echo $FLAVOR > /flavor"
    (note,) = result.untranslated
    assert note.construct == "pip install xformers==$XF" and "no known value" in note.instead


def test_weight_downloads_at_build_time_are_listed(tmp_path: Path) -> None:
    text = (
        "FROM python:3.11-slim\n"
        "RUN hf download Wan-AI/Wan2.1-T2V-1.3B --local-dir /models\n"
        "RUN wget -q https://example.com/models/vae.safetensors -O /models/vae.safetensors\n"
        "RUN python -c \"from huggingface_hub import snapshot_download; snapshot_download('x/y')\"\n"
        "RUN git clone https://huggingface.co/TencentGameMate/chinese-wav2vec2-base /models/w2v\n"
    )
    result, data = translate(tmp_path, text)
    assert [line for line, c in constructs(result) if c.startswith("weights")] == [2, 3, 4, 5]
    assert [s.get("secrets") for s in data["steps"]] == [["hf_token"], None, None, None]
    assert "app" not in data


def test_torch_cuda_arch_list_and_no_build_isolation_are_listed(tmp_path: Path) -> None:
    text = (
        "FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04\n"
        "RUN TORCH_CUDA_ARCH_LIST='8.0;9.0' pip install flash-attn --no-build-isolation\n"
    )
    result, data = translate(tmp_path, text)
    assert data["requirements"] == ["flash-attn"]
    listed = [c for _, c in constructs(result)]
    assert any("TORCH_CUDA_ARCH_LIST" in c for c in listed)
    assert any("--no-build-isolation" in c for c in listed)
    assert any("no nvcc" in w.message for w in result.warnings)


# ---------------------------------------------------------------- ENV, USER, COPY, git


def test_env_user_healthcheck_and_expose_become_image_keys(tmp_path: Path) -> None:
    text = (
        "FROM python:3.11-slim\n"
        'ENV A=1 B="two words" PATH=/opt/bin:$PATH\n'
        "ENV DEBIAN_FRONTEND=noninteractive\n"
        "USER root\n"
        "EXPOSE 8000/tcp 53/udp\n"
        "HEALTHCHECK --interval=30s --start-period=5s CMD curl -f http://localhost:8000/\n"
        "USER worker\n"
        "ENTRYPOINT python -u serve.py\n"
    )
    result, data = translate(tmp_path, text)
    assert data["image"] == {
        "env": {"A": "1", "B": "two words"},
        "entrypoint": ["/bin/sh", "-c", "python -u serve.py"],
        "expose": [8000],
        "user": "worker",
        "healthcheck": {
            "cmd": ["/bin/sh", "-c", "curl -f http://localhost:8000/"],
            "interval": "30s",
        },
    }
    assert [line for line, _ in constructs(result)] == [2, 5, 6]


def test_a_uid_user_cannot_be_expressed(tmp_path: Path) -> None:
    result, data = translate(tmp_path, "FROM python:3.11-slim\nUSER 1000:1000\nRUN echo hi > /x\n")
    assert "user" not in data.get("image", {})
    assert [line for line, _ in constructs(result)] == [2]


def test_a_directory_copy_is_the_app_and_single_files_go_in_app_files(tmp_path: Path) -> None:
    text = "FROM python:3.11-slim\nWORKDIR /app\nCOPY src/ .\nCOPY handler.py test_input.json ./\n"
    files = {"src__model.py": "", "handler.py": "", "test_input.json": "{}"}
    result, data = translate(tmp_path, text, **files)
    assert data["app"] == {"path": "src", "files": ["handler.py", "test_input.json"]}
    assert result.untranslated == ()


def test_a_dockerignore_is_not_read_and_says_so(tmp_path: Path) -> None:
    files = {"app__model.py": "", "app__.dockerignore": "*.ckpt\n"}
    result, data = translate(tmp_path, "FROM python:3.11-slim\nCOPY app/ /app/\n", **files)
    assert data["app"] == {"path": "app"}
    assert any(".dockerignore is not read" in w.message for w in result.warnings)


def test_a_step_runs_in_its_workdir_when_it_names_relative_paths(tmp_path: Path) -> None:
    text = (
        "FROM python:3.11-slim\n"
        "WORKDIR /srv\n"
        "RUN python tools/warm.py\n"
        "RUN chmod +x /start.sh && ./bin/setup\n"
        "RUN chmod +x /start.sh\n"
    )
    _, data = translate(tmp_path, text)
    assert [s["run"] for s in data["steps"]] == [
        "mkdir -p /srv && cd /srv && python tools/warm.py",
        "mkdir -p /srv && cd /srv && chmod +x /start.sh && ./bin/setup",
        "chmod +x /start.sh",
    ]


def test_a_clone_at_a_full_commit_becomes_app_git(tmp_path: Path) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    text = (
        "FROM python:3.11-slim\n"
        "RUN git clone https://github.com/Wan-Video/Wan2.2.git /opt/wan && \\\n"
        f"    git -C /opt/wan checkout {commit} && python -c 'import sys'\n"
        "COPY handler.py /opt/wan/\n"
        "WORKDIR /opt/wan\n"
        "RUN python patch.py\n"
    )
    _, data = translate(tmp_path, text, **{"handler.py": ""})
    assert data["app"] == {
        "git": {"url": "https://github.com/Wan-Video/Wan2.2.git", "rev": commit},
        "files": ["handler.py"],
    }
    assert data["image"]["workdir"] == "/app"
    assert [(s["at"], s["run"]) for s in data["steps"]] == [
        ("after-apt", "python -c 'import sys'"),
        ("after-app", "python patch.py"),
    ]


def test_a_fetch_then_checkout_in_the_clone_pins_it(tmp_path: Path) -> None:
    commit = "89abcdef0123456789abcdef0123456789abcdef"
    text = (
        "FROM python:3.11-slim\n"
        "RUN git clone https://github.com/MeiGen-AI/MultiTalk.git\n"
        f"RUN cd MultiTalk && git fetch --depth 1 origin {commit} && git checkout {commit}\n"
    )
    _, data = translate(tmp_path, text)
    assert data["app"]["git"]["rev"] == commit and "steps" not in data


def test_a_moving_branch_that_cannot_be_pinned_stays_a_step_with_a_warning(tmp_path: Path) -> None:
    text = "FROM python:3.11-slim\nRUN git clone -b main https://github.com/x/y.git /y\n"
    result, data = translate(tmp_path, text)
    assert data["steps"][0]["run"] == "git clone -b main https://github.com/x/y.git /y"
    (warning,) = result.warnings
    assert "follows main, which moves, and could not be pinned (no network" in warning.message


def git(repo: Path, *args: str) -> str:
    assert GIT is not None
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "HOME": str(repo.parent),
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [GIT, "-C", str(repo), *args], capture_output=True, text=True, check=True, env=env
    )
    return done.stdout.strip()


@needs_git
def test_a_branch_clone_is_pinned_to_what_git_ls_remote_names_today(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "--quiet", "--initial-branch", "main")
    (repo / "model.py").write_text("x = 1\n")
    git(repo, "add", "model.py")
    git(repo, "commit", "--quiet", "-m", "one")
    head = git(repo, "rev-parse", "HEAD")
    work = tmp_path / "work"
    work.mkdir()
    dockerfile(work, f"FROM python:3.11-slim\nRUN git clone --branch main file://{repo} /app\n")
    with inside(work):
        result = run_init(
            InitOptions(dockerfiles=("Dockerfile",)), ls_remote(GIT, {"PATH": "/usr/bin:/bin"})
        )
    data = yaml.safe_load(result.text)
    assert data["app"] == {"git": {"url": f"file://{repo}", "rev": head}}
    assert any(f"pinned to the commit it names today, {head}" in w.message for w in result.warnings)
    matrix = load_matrix(work / "matrix.yaml")
    settings = Settings(git=GIT, git_cache=tmp_path / "git-cache")
    rendered = render_cell(
        matrix, matrix.cells[0], tmp_path / "build", Log(verbosity=-1), settings=settings
    )
    assert (rendered.dockerfile.parent / "app" / "model.py").read_text() == "x = 1\n"


@needs_git
def test_ls_remote_says_why_a_ref_cannot_be_resolved(tmp_path: Path) -> None:
    resolve = ls_remote(GIT, {"PATH": "/usr/bin:/bin"})
    commit, why = resolve(f"file://{tmp_path}/missing", "main")
    assert commit is None and why
    assert ls_remote(None, {})("https://x/y", None) == (None, "git not found on PATH")


# ---------------------------------------------------------------- stages, several Dockerfiles


def test_multi_stage_builds_follow_the_final_stages_base_chain(tmp_path: Path) -> None:
    text = (
        "ARG CUDA=12.4.1\n"
        "FROM nvidia/cuda:${CUDA}-cudnn-devel-ubuntu22.04 AS build\n"
        "RUN apt-get update && apt-get install -y python3.11\n"
        "FROM build AS runtime\n"
        "RUN pip install peft\n"
        "FROM python:3.11-slim AS other\n"
        "RUN pip install never-installed\n"
        "FROM runtime\n"
        "COPY --from=other /x /x\n"
    )
    result, data = translate(tmp_path, text)
    (base,) = data["bases"].values()
    assert base["image"] == "nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04"
    assert base["apt"] == ["python3.11"] and data["requirements"] == ["peft"]
    assert [line for line, _ in constructs(result)] == [6, 9]


def test_several_dockerfiles_become_several_bases_with_their_own_pins(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "Dockerfile").write_text(
        "FROM runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04\n"
        "RUN pip install transformers==4.47.0 peft numpy==1.26.4 --extra-index-url https://idx.example/a\n"
    )
    (tmp_path / "b" / "Dockerfile").write_text(
        "FROM pytorch/pytorch:2.4.1-cuda12.1-cudnn9-runtime\n"
        "RUN pip install transformers==4.51.3 peft 'decord[x]'\n"
    )
    with inside(tmp_path):
        result = run_init(InitOptions(dockerfiles=("a/Dockerfile", "b/Dockerfile")), no_network)
    data = yaml.safe_load(result.text)
    assert data["axes"] == {"base": ["runpod-cu124-py311", "pytorch-cu121-py311"]}
    assert data["include"] == [
        {"base": "runpod-cu124-py311", "transformers": "4.47.0", "numpy": "1.26.4"},
        {"base": "pytorch-cu121-py311", "transformers": "4.51.3"},
    ]
    assert data["requirements"] == ["peft", "decord[x]"]
    assert data["indexes"]["extra_index_urls"] == [
        {"url": "https://idx.example/a", "cuda": ["12.4"]}
    ]
    matrix = load_matrix(tmp_path / "matrix.yaml")
    assert [c.id for c in matrix.cells] == [
        "runpod-cu124-py311.transformers-4.47.0.numpy-1.26.4",
        "pytorch-cu121-py311.transformers-4.51.3",
    ]
    assert matrix.cells[1].indexes.extra_index_urls == ()
    assert any("only b/Dockerfile asks" in w.message for w in result.warnings)


def test_a_base_built_by_another_dockerfile_joins_its_chain(tmp_path: Path) -> None:
    _, path = init_case("two-stage", tmp_path)
    data = yaml.safe_load(path.read_text())
    (name,) = data["bases"]
    assert name == "nvidia-cu124-py311"
    assert data["bases"][name]["apt"][:2] == ["python3.11", "python3.11-venv"]
    assert data["axes"]["torch"] == ["2.4.1"] and data["axes"]["transformers"] == ["4.51.3"]
    assert "# base.Dockerfile:7" in path.read_text()
    assert path.read_text().startswith(
        "# Written by `builder init` from base.Dockerfile, Dockerfile"
    )


# ---------------------------------------------------------------- --requirements, --repo, --profile


def test_requirements_files_add_their_lines(tmp_path: Path) -> None:
    dockerfile(tmp_path, "FROM python:3.11-slim\nRUN pip install peft\n")
    (tmp_path / "extra.txt").write_text(
        "-r more.txt\nlibrosa>=0.10 ; python_version >= '3.9'\npeft\n"
    )
    (tmp_path / "more.txt").write_text("soundfile\n--extra-index-url https://idx.example/simple\n")
    with inside(tmp_path):
        result = draft(
            InitOptions(dockerfiles=("Dockerfile",), requirements=(Path("extra.txt"),)), no_network
        )
    data = yaml.safe_load(result.text)
    assert data["requirements"] == ["peft", 'librosa>=0.10; python_version >= "3.9"', "soundfile"]
    assert data["indexes"]["extra_index_urls"] == ["https://idx.example/simple"]
    assert "# extra.txt:2" in result.text


def test_a_repo_scan_drafts_requirements_and_a_profile(tmp_path: Path) -> None:
    where = copy_case("multitalk-runtime", tmp_path)
    options = InitOptions(
        dockerfiles=("Dockerfile",),
        repo=Path("MultiTalk"),
        entries=(Path("MultiTalk/generate_multitalk.py"),),
        profiles=("multitalk",),
    )
    with inside(where):
        result = run_init(options, no_network)
    data = yaml.safe_load(result.text)
    assert {"librosa", "soundfile", "einops"} <= set(data["requirements"])
    assert data["profiles"] == ["multitalk", "multitalk-scan"] and data["profile_paths"] == [
        "profiles"
    ]
    assert result.profile is not None and result.profile[0] == Path("profiles/multitalk-scan.yaml")
    profile = load_profiles((where / "profiles",))["multitalk-scan"]
    assert "librosa" in profile.imports
    assert any("src.audio_analysis" in w.message for w in result.warnings)
    load_matrix(where / "matrix.yaml")


def test_an_unknown_profile_is_exit_2_with_a_suggestion(tmp_path: Path) -> None:
    dockerfile(tmp_path, "FROM python:3.11-slim\n")
    done = run_cli("init", "--dockerfile", "Dockerfile", "--profile", "wan22", cwd=tmp_path)
    assert done.code == 2
    assert "unknown profile" in done.err and "did you mean 'wan2.2'" in done.err


# ---------------------------------------------------------------- the command


def test_the_command_writes_the_matrix_and_lists_what_it_could_not_translate(
    tmp_path: Path,
) -> None:
    where = copy_case("wan-s2v-runpod", tmp_path)
    done = run_cli("init", "--dockerfile", "Dockerfile", "--profile", "wan2.2-s2v", cwd=where)
    assert done.code == 0, done.err
    assert done.out == "wrote matrix.yaml\n"
    assert "Dockerfile:26: a soft install (`|| true`)" in done.err
    parse_matrix((where / "matrix.yaml").read_text(), where / "matrix.yaml")


def test_json_output_has_the_documented_shape(tmp_path: Path) -> None:
    where = copy_case("wan-s2v-runpod", tmp_path)
    done = run_cli("init", "--dockerfile", "Dockerfile", "--format", "json", cwd=where)
    data = json.loads(done.out)
    assert list(data) == ["matrix", "profile", "untranslated", "warnings", "check"]
    assert data["matrix"] == "matrix.yaml" and data["check"] is None
    assert {k: data["untranslated"][0][k] for k in ("file", "line")} == {
        "file": "Dockerfile",
        "line": 26,
    }
    assert set(data["untranslated"][0]) == {"file", "line", "construct", "instead"}


def test_an_existing_matrix_is_not_overwritten_without_force(tmp_path: Path) -> None:
    dockerfile(tmp_path, "FROM python:3.11-slim\n")
    (tmp_path / "matrix.yaml").write_text("mine\n")
    done = run_cli("init", "--dockerfile", "Dockerfile", cwd=tmp_path)
    assert done.code == 2 and "already exists" in done.err and "--force" in done.err
    assert (tmp_path / "matrix.yaml").read_text() == "mine\n"
    assert run_cli("init", "--dockerfile", "Dockerfile", "--force", cwd=tmp_path).code == 0
    load_matrix(tmp_path / "matrix.yaml")


def test_check_runs_on_the_result_and_its_exit_code_is_checks(tmp_path: Path, cache: Path) -> None:
    where = copy_case("wan-s2v-runpod", tmp_path)
    with inside(where):
        matrix = parse_matrix(
            draft(
                InitOptions(dockerfiles=("Dockerfile",), profiles=("wan2.2-s2v",)), no_network
            ).text,
            Path("matrix.yaml"),
        )
    for cell in matrix.cells:  # uv's recorded answers, where check caches them
        result = recorded("wan-s2v-runpod")(cell, Settings(), True)
        target = cache / "resolutions" / f"{inputs_digest(cell, 'uv')}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps({"ok": result.ok, "body": result.body, "error": result.error}))
    args = ["init", "--dockerfile", "Dockerfile", "--profile", "wan2.2-s2v", "--check", "--offline"]
    done = run_cli(*args, "--format", "json", cwd=where, env={"BUILDER_METADATA_CACHE": str(cache)})
    assert done.code == 1, done.err
    (cell,) = json.loads(done.out)["check"]["cells"]
    assert {"profile-range"} <= {f["code"] for f in cell["findings"]}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "Dockerfile not found"),
        (b"FROM python:3.11\nRUN echo \xff\n", "not UTF-8"),
        (b"# just a comment\nRUN pip install peft\n", "no FROM instruction"),
        (b"ARG BASE\nFROM ${BASE}\n", "a build argument without a default"),
    ],
)
def test_bad_dockerfiles_are_exit_2_naming_the_file(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    if content is not None:
        (tmp_path / "worker.Dockerfile").write_bytes(content)
    done = run_cli("init", "--dockerfile", "worker.Dockerfile", cwd=tmp_path)
    assert done.code == 2, done.err
    assert "worker.Dockerfile" in done.err and message in done.err
    assert not (tmp_path / "matrix.yaml").exists()


def test_an_unreadable_dockerfile_is_exit_2_naming_it(tmp_path: Path) -> None:
    path = dockerfile(tmp_path, "FROM python:3.11-slim\n")
    path.chmod(0)
    done = run_cli("init", "--dockerfile", "Dockerfile", cwd=tmp_path, unprivileged=True)
    assert done.code == 2, done.err
    assert "Dockerfile: cannot read Dockerfile" in done.err


def test_a_directory_given_as_the_dockerfile_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").mkdir()
    done = run_cli("init", "--dockerfile", "Dockerfile", cwd=tmp_path)
    assert done.code == 2 and "not a regular file" in done.err


def test_no_dockerfile_is_a_usage_error(tmp_path: Path) -> None:
    done = run_cli("init", cwd=tmp_path)
    assert done.code == 2 and "no --dockerfile given" in done.err


def test_draft_raises_input_error_for_a_missing_requirements_file(tmp_path: Path) -> None:
    dockerfile(tmp_path, "FROM python:3.11-slim\n")
    with inside(tmp_path), pytest.raises(InputError, match=r"nope\.txt"):
        draft(
            InitOptions(dockerfiles=("Dockerfile",), requirements=(Path("nope.txt"),)), no_network
        )
