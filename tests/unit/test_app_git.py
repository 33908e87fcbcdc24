"""`app.git` and `app.files`: validation, the clone cache by commit, the context and labels.

The repository is a local one made here and reached by file://, so no network is needed;
these tests need the git binary (skipped without it).
"""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pytest

from builder.errors import InputError
from builder.log import Log
from builder.matrix import load_matrix, parse_matrix
from builder.render import render_cell
from builder.settings import Settings
from tests.conftest import run_cli
from tests.unit.test_render import hadolint

GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="git is not installed")

MATRIX = """\
version: 1
bases:
  cpu: {{image: "debian:bookworm", python: "3.11"}}
axes: {{base: [cpu]}}
app:
{app}
"""


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


def commit(repo: Path, text: str) -> str:
    """Commit `model.py` holding `text`; the new commit's sha."""
    (repo / "model.py").write_text(text)
    git(repo, "add", "model.py")
    git(repo, "commit", "--quiet", "-m", text)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "upstream"
    path.mkdir()
    git(path, "init", "--quiet", "--initial-branch", "main")
    return path


def project(tmp_path: Path, app: str) -> Path:
    matrix = tmp_path / "project" / "matrix.yaml"
    matrix.parent.mkdir(exist_ok=True)
    matrix.write_text(MATRIX.format(app=app))
    return matrix


def git_app(url: str, rev: str, extra: str = "") -> str:
    return f"  git: {{url: {url!r}, rev: {rev!r}}}\n{extra}"


def settings(tmp_path: Path) -> Settings:
    return Settings(git=GIT, git_cache=tmp_path / "cache" / "git", environ={"PATH": "/usr/bin"})


def render(matrix_path: Path, tmp_path: Path) -> tuple[Path, str]:
    """Render the one cell; its context directory and the log."""
    matrix = load_matrix(matrix_path)
    stream = io.StringIO()
    log = Log(stream, verbosity=1)
    rendered = render_cell(
        matrix, matrix.cells[0], tmp_path / "out", log, settings=settings(tmp_path)
    )
    return rendered.directory, stream.getvalue()


def refused(tmp_path: Path, app: str) -> str:
    path = project(tmp_path, app)
    with pytest.raises(InputError) as caught:
        parse_matrix(path.read_text(), path)
    return f"{caught.value.message}\n{caught.value.hint}"


# Validation


def test_a_full_commit_and_an_https_url_are_read(tmp_path: Path) -> None:
    rev = "0123456789abcdef0123456789ABCDEF01234567"
    path = project(tmp_path, git_app("https://github.com/Wan-Video/Wan2.2", rev))
    app = load_matrix(path).cells[0].app
    assert app is not None and app.git is not None and app.path is None
    assert (app.git.url, app.git.rev) == ("https://github.com/Wan-Video/Wan2.2", rev.lower())


def test_the_report_names_the_repository_and_commit_a_cell_was_built_from(
    tmp_path: Path,
) -> None:
    rev = "0123456789abcdef0123456789abcdef01234567"
    path = project(tmp_path, git_app("https://github.com/Wan-Video/Wan2.2", rev))
    source = load_matrix(path).cells[0].to_json()["source"]
    assert source == {"url": "https://github.com/Wan-Video/Wan2.2", "commit": rev}
    local = project(tmp_path, "  path: .\n")
    assert "source" not in load_matrix(local).cells[0].to_json()


def test_a_branch_name_is_refused_because_it_moves(tmp_path: Path) -> None:
    message = refused(tmp_path, git_app("https://example.com/r", "main"))
    assert "matrix.yaml:6:44: " in message and "app.git.rev: 'main' is a branch or tag" in message
    assert "full 40-hex commit" in message and "reproducible" in message


def test_a_short_sha_is_refused_as_ambiguous(tmp_path: Path) -> None:
    message = refused(tmp_path, git_app("https://example.com/r", "0123abc"))
    assert "app.git.rev: '0123abc' is a short commit" in message


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://example.com/r", "only https:// and file://"),
        ("git@github.com:a/b.git", "app.git.url: 'git@github.com:a/b.git': ssh URLs are not"),
        ("ssh://git@github.com/a/b", "ssh URLs are not supported"),
        ("https://user:secret@example.com/r", "credentials in the URL"),
        ("https://example.com/r;$(id)", "app.git.url"),
    ],
)
def test_unsafe_or_unsupported_urls_are_refused(tmp_path: Path, url: str, fragment: str) -> None:
    assert fragment in refused(tmp_path, git_app(url, "a" * 40))


def test_path_and_git_together_are_refused(tmp_path: Path) -> None:
    (tmp_path / "project" / "app").mkdir(parents=True)
    message = refused(tmp_path, "  path: app\n" + git_app("https://example.com/r", "a" * 40))
    assert "app.git: `app.path` and `app.git` are exclusive" in message


def test_git_needs_url_and_rev_and_no_other_key(tmp_path: Path) -> None:
    message = refused(tmp_path, "  git: {url: 'https://example.com/r', ref: main}")
    assert "app.git.rev: missing required key" in message
    assert "app.git.ref: unknown key" in message


def test_app_files_must_be_files_inside_the_matrix_directory(tmp_path: Path) -> None:
    (tmp_path / "outside.py").write_text("")
    (tmp_path / "project" / "sub").mkdir(parents=True)
    message = refused(
        tmp_path,
        git_app("https://example.com/r", "a" * 40, "  files: [../outside.py, sub, missing.py]"),
    )
    assert "app.files[0]:" in message and "outside the matrix's directory" in message
    assert "app.files[1]: file not found" in message
    assert "app.files[2]: file not found" in message


def test_two_app_files_with_one_name_are_refused(tmp_path: Path) -> None:
    for folder in ("a", "b"):
        (tmp_path / "project" / folder).mkdir(parents=True)
        (tmp_path / "project" / folder / "handler.py").write_text("")
    message = refused(
        tmp_path,
        git_app("https://example.com/r", "a" * 40, "  files: [a/handler.py, b/handler.py]"),
    )
    assert "app.files[1]: 'handler.py' is already copied from" in message


def test_the_cli_exits_2_for_a_branch_name(tmp_path: Path) -> None:
    path = project(tmp_path, git_app("https://example.com/r", "main"))
    result = run_cli("matrix", "-m", str(path))
    assert result.code == 2 and "app.git.rev" in result.err and "Traceback" not in result.err


# Cloning, caching, the context


@needs_git
def test_the_app_is_the_pinned_commit_not_a_later_one(tmp_path: Path, repo: Path) -> None:
    pinned = commit(repo, "VERSION = 1\n")
    commit(repo, "VERSION = 2\n")
    context, log = render(project(tmp_path, git_app(repo.as_uri(), pinned)), tmp_path)
    assert (context / "app" / "model.py").read_text() == "VERSION = 1\n"
    assert not (context / "app" / ".git").exists()
    assert "+ " in log and "fetch" in log


@needs_git
def test_a_clone_is_cached_by_commit_and_not_fetched_again(tmp_path: Path, repo: Path) -> None:
    pinned = commit(repo, "VERSION = 1\n")
    matrix = project(tmp_path, git_app(repo.as_uri(), pinned))
    render(matrix, tmp_path)
    assert (tmp_path / "cache" / "git" / pinned / "model.py").is_file()
    shutil.rmtree(repo)  # the remote is gone: a second render must not need it
    context, log = render(matrix, tmp_path)
    assert (context / "app" / "model.py").read_text() == "VERSION = 1\n"
    assert "fetch" not in log


@needs_git
def test_a_commit_the_repository_lacks_is_an_error_naming_url_and_rev(
    tmp_path: Path, repo: Path
) -> None:
    commit(repo, "VERSION = 1\n")
    missing = "f" * 40
    with pytest.raises(InputError) as caught:
        render(project(tmp_path, git_app(repo.as_uri(), missing)), tmp_path)
    assert caught.value.exit_code == 2
    assert repo.as_uri() in caught.value.message and missing in caught.value.message
    assert not (tmp_path / "cache" / "git" / missing).exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_without_git_a_clone_is_a_clear_error(tmp_path: Path) -> None:
    matrix = load_matrix(project(tmp_path, git_app("https://example.com/r", "a" * 40)))
    with pytest.raises(InputError, match="git not found"):
        render_cell(matrix, matrix.cells[0], tmp_path / "out", Log(verbosity=-1))


@needs_git
def test_app_files_land_in_the_app_root_over_the_clone(tmp_path: Path, repo: Path) -> None:
    pinned = commit(repo, "VERSION = 1\n")
    (tmp_path / "project" / "worker").mkdir(parents=True)
    (tmp_path / "project" / "worker" / "handler.py").write_text("import model\n")
    (tmp_path / "project" / "model.py").write_text("VERSION = 'local'\n")
    app = git_app(repo.as_uri(), pinned, "  files: [worker/handler.py, model.py]")
    context, _ = render(project(tmp_path, app), tmp_path)
    assert (context / "app" / "handler.py").read_text() == "import model\n"
    assert (context / "app" / "model.py").read_text() == "VERSION = 'local'\n"
    # the cache keeps the commit's own file
    assert (tmp_path / "cache" / "git" / pinned / "model.py").read_text() == "VERSION = 1\n"


def test_app_files_are_copied_beside_a_local_app_path(tmp_path: Path) -> None:
    (tmp_path / "project" / "app").mkdir(parents=True)
    (tmp_path / "project" / "app" / "model.py").write_text("X = 1\n")
    (tmp_path / "project" / "test_input.json").write_text("{}\n")
    context, _ = render(project(tmp_path, "  path: app\n  files: [test_input.json]"), tmp_path)
    assert sorted(p.name for p in (context / "app").iterdir()) == ["model.py", "test_input.json"]


@needs_git
def test_the_labels_carry_the_source_and_the_commit(tmp_path: Path, repo: Path) -> None:
    pinned = commit(repo, "VERSION = 1\n")
    context, _ = render(project(tmp_path, git_app(repo.as_uri(), pinned)), tmp_path)
    dockerfile = (context / "Dockerfile").read_text()
    assert f'org.opencontainers.image.revision="{pinned}"' in dockerfile
    assert f'org.opencontainers.image.source="{repo.as_uri()}"' in dockerfile
    assert "COPY app/ /app/" in dockerfile
    done = subprocess.run(
        [hadolint(), "--no-color", str(context / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout


@needs_git
def test_the_render_cli_clones_with_the_settings_git_cache(tmp_path: Path, repo: Path) -> None:
    pinned = commit(repo, "VERSION = 1\n")
    matrix = project(tmp_path, git_app(repo.as_uri(), pinned))
    cache = tmp_path / "gitcache"
    result = run_cli(
        "render",
        "-m",
        str(matrix),
        "-o",
        str(tmp_path / "out"),
        env={"BUILDER_GIT_CACHE": str(cache)},
    )
    assert result.code == 0, result.err
    assert (cache / pinned / "model.py").is_file()


@needs_git
def test_the_venv_engine_runs_a_cloned_app_with_its_files(tmp_path: Path, repo: Path) -> None:
    from builder.backends import VenvBackend

    pinned = commit(repo, "VERSION = 1\n")
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "handler.py").write_text("import model\n")
    matrix = load_matrix(project(tmp_path, git_app(repo.as_uri(), pinned, "  files: [handler.py]")))
    backend = VenvBackend(matrix=matrix, settings=settings(tmp_path), log=Log(verbosity=-1))
    (tmp_path / "inputs").mkdir()
    app = Path(backend._app_dir(matrix.cells[0], tmp_path / "inputs") or "")
    assert app == tmp_path / "inputs" / "app"
    assert sorted(p.name for p in app.iterdir()) == ["handler.py", "model.py"]


def test_the_verdict_cache_key_follows_the_commit(tmp_path: Path) -> None:
    from builder.pipeline import _app_digest

    keys = {
        str(_app_digest(load_matrix(project(tmp_path, git_app("https://e.com/r", rev))).cells[0]))
        for rev in ("a" * 40, "b" * 40)
    }
    assert len(keys) == 2
