"""RUN lines: each command (split by bashlex) is translated or kept for a step.

apt-get installs become the base's `apt`; pip installs, uninstalls and `-r` files become
requirements (and indexes, wheelhouses); `git clone` plus a checkout may become `app.git`;
apt and pip housekeeping (`apt-get update`, `rm -rf /var/lib/apt/lists/*`, `pip cache purge`)
goes. Everything else stays, as written, in a step. A line bashlex cannot parse stays whole.
"""

from __future__ import annotations

import shlex
import urllib.parse
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from packaging.utils import canonicalize_name

from builder.init.model import Fact, Source
from builder.init.pip import (
    PipCommand,
    check_readable,
    parse_pip,
    pip_words,
    read_requirements_file,
    read_spec,
)
from builder.init.shell import Command, Unparsed, split
from builder.init.stages import Instruction, expand
from builder.init.walk import CLONE, CONTEXT, DROP, KEEP, Clone, Install, Run, Uninstall, Walk

PYPI = ("https://pypi.org/simple", "https://pypi.org/simple/", "https://pypi.python.org/simple")
APT = ("apt-get", "apt")
APT_DROPPED = (
    "update",
    "upgrade",
    "dist-upgrade",
    "full-upgrade",
    "clean",
    "autoclean",
    "autoremove",
)
APT_VALUED = ("-o", "-t", "--target-release", "-c", "--config-file")
HOUSEKEEPING = ("/var/lib/apt/lists", "/var/cache/apt", "/root/.cache", "~/.cache", "/tmp")
CONTEXT_PROGRAMS = ("cd", "export", "set", "true", ":", "echo", "umask")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt", ".gguf", ".onnx", ".h5")
SECRET_IDS = {"hf_token": "hf_token", "hf": "hf_token", "huggingface": "hf_token"}
SECRET_IDS |= {"netrc": "netrc", "cacert": "cacert", "ca": "cacert"}
HEX = set("0123456789abcdef")


def run_instruction(walk: Walk, ins: Instruction) -> None:
    """One RUN: its commands, each translated or kept."""
    position = walk.step()
    if walk.non_root is not None:
        walk.note(ins.source, f"RUN as the USER set at {walk.non_root}", "steps run as root")
        walk.non_root = None
    if ins.heredoc:
        walk.note(
            ins.source,
            "RUN with a here-document",
            "left out: a step is one line of shell; put the script in a file of the app and "
            "run it from a step",
        )
        return
    text = shlex.join(ins.value) if ins.json else (ins.value[0] if ins.value else "")
    workdir = walk.workdir if walk.workdir_fact is not None else ""
    run = Run(ins, position, workdir, (), [], _exports(walk), secrets=_secrets(walk, ins))
    walk.runs.append(run)
    try:
        commands = split(text)
    except Unparsed as exc:
        run.commands = (Command(text=text.strip()),)
        run.statuses = [KEEP]
        run.unparsed = str(exc)
        return
    run.commands = commands
    _commands(walk, run)


def _exports(walk: Walk) -> dict[str, str]:
    """What a step must export to see the build arguments and ENV the RUN saw."""
    return {**walk.args, **{key: fact.value for key, fact in walk.env.items()}}


def _secrets(walk: Walk, ins: Instruction) -> tuple[str, ...]:
    found = []
    for flag in ins.flags:
        if not flag.startswith("--mount="):
            continue
        options = dict(part.partition("=")[::2] for part in flag[8:].split(","))
        if options.get("type") == "secret":
            name = options.get("id") or PurePosixPath(options.get("target", "")).name
            if name.lower() in SECRET_IDS:
                found.append(SECRET_IDS[name.lower()])
            else:
                walk.note(ins.source, flag, "left out: steps mount cacert, netrc or hf_token")
        elif options.get("type") == "bind":
            walk.note(ins.source, flag, "left out: steps mount only builder's secrets")
    return tuple(dict.fromkeys(found))


def _commands(walk: Walk, run: Run) -> None:
    cwd = walk.workdir
    for index, command in enumerate(run.commands):
        previous = run.statuses[-1] if run.statuses else None
        if command.before == "||" and previous in (DROP, CLONE):
            run.statuses.append(DROP)  # the fallback of a translated command
            continue
        status, cwd = _classify(walk, run, index, command, cwd)
        run.statuses.append(status)


def _fallback(run: Run, index: int) -> str:
    """How a failure of command `index` is ignored: the `|| ...` after it, if any."""
    command = run.commands[index]
    if command.after != "||" or index + 1 >= len(run.commands):
        return ""
    return f"`|| {_short(run.commands[index + 1].text, 30)}`"


def _classify(walk: Walk, run: Run, index: int, command: Command, cwd: str) -> tuple[str, str]:
    if command.compound:
        _inside_construct(walk, run, command)
        return KEEP, cwd
    if command.pipeline:
        return _pipeline(walk, run, index, command, cwd), cwd
    words = command.words[1:] if command.words[:1] == ("sudo",) else command.words
    words = tuple(expand(word, run.exports) for word in words)
    _arch_list(walk, run, command)
    if not words:
        return CONTEXT, cwd
    program = PurePosixPath(words[0]).name
    if program == "cd":
        target = words[1] if len(words) > 1 else "/root"
        return CONTEXT, cwd if target == "-" else str(walk.in_image(target, cwd))
    handler = PROGRAMS.get(program)
    if handler is not None:
        return handler(walk, run, index, command, words, cwd), cwd
    pip = pip_words(words)
    if pip is not None:
        return _pip(walk, run, command, pip, cwd, soft=_fallback(run, index)), cwd
    if program in CONTEXT_PROGRAMS and not command.redirected:
        return CONTEXT, cwd
    _weights(walk, run, command, words)
    return KEEP, cwd


def _arch_list(walk: Walk, run: Run, command: Command) -> None:
    names = [a.partition("=")[0] for a in command.assignments]
    if command.words[:1] == ("export",):
        names += [w.partition("=")[0] for w in command.words[1:]]
    if "TORCH_CUDA_ARCH_LIST" in names:
        walk.note(
            run.ins.source,
            f"TORCH_CUDA_ARCH_LIST in `{command.text}`",
            "left out: the lock installs wheels, so no source build reads it (put a wheel "
            "built for these archs in indexes.wheelhouse)",
        )


def _inside_construct(walk: Walk, run: Run, command: Command) -> None:
    if any(pip_words(words) is not None or words[:2] in _APT_INSTALL for words in command.inner):
        walk.note(
            run.ins.source,
            f"an install inside a shell construct (`{_short(command.text)}`)",
            "kept as written in step {step} (at {at}): it installs outside the lock; move "
            "the packages to `requirements` or the base's `apt`",
        )


_APT_INSTALL = (("apt-get", "install"), ("apt", "install"))


def _pipeline(walk: Walk, run: Run, index: int, command: Command, cwd: str) -> str:
    """A pipeline is translated whole when one of its commands is pip or apt (the rest is
    logging, like `| tee log`); pip's failure is hidden unless the shell has pipefail."""
    for i, raw in enumerate(command.pipeline):
        words = tuple(expand(word, run.exports) for word in raw)
        pip = pip_words(words)
        last = i == len(command.pipeline) - 1
        soft = (
            ""
            if last or walk.pipefail
            else "a pipe after it (the pipeline's status is the last command's)"
        )
        if pip is not None:
            return _pip(walk, run, command, pip, cwd, soft=soft or _fallback(run, index))
        if words[:1] and PurePosixPath(words[0]).name in APT:
            return _apt(walk, run, 0, command, words, cwd)
    _weights(walk, run, command, tuple(w for words in command.pipeline for w in words))
    return KEEP


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------- apt


def _apt(
    walk: Walk, run: Run, index: int, command: Command, words: tuple[str, ...], cwd: str
) -> str:
    args = list(words[1:])
    packages: list[str] = []
    action = ""
    while args:
        word = args.pop(0)
        if word in APT_VALUED and args:
            args.pop(0)
        elif word.startswith("-"):
            continue
        elif not action:
            action = word
        else:
            packages.append(word)
    if action in APT_DROPPED:
        return DROP
    if action != "install":
        return KEEP
    for package in packages:
        _apt_package(walk, run.ins.source, package)
    return DROP


def _apt_package(walk: Walk, source: Source, package: str) -> None:
    name = package.partition("=")[0]
    if not name or not set(package) <= set("abcdefghijklmnopqrstuvwxyz0123456789+.-=:~"):
        walk.note(source, f"apt package {package}", "left out: not a plain Debian package name")
        return
    if any(fact.value == package for fact in walk.apt):
        return
    walk.apt.append(Fact(package, (source,)))
    version = name.removeprefix("python")
    if version.startswith("3.") and version[2:].isdigit():
        walk.python = Fact(version, (source,))


def _rm(
    walk: Walk, run: Run, index: int, command: Command, words: tuple[str, ...], cwd: str
) -> str:
    targets = [w for w in words[1:] if not w.startswith("-")]
    if targets and all(t.startswith(HOUSEKEEPING) for t in targets):
        return DROP
    return KEEP


def _conda(
    walk: Walk, run: Run, index: int, command: Command, words: tuple[str, ...], cwd: str
) -> str:
    if words[1:2] == ("clean",):
        return DROP
    if words[1:2] in (("install",), ("create",), ("update",)):
        walk.note(
            run.ins.source,
            f"`{_short(command.text)}`",
            "kept as written in step {step} (at {at}): conda packages are not in the lock",
        )
    return KEEP


def _add_apt_repository(
    walk: Walk, run: Run, index: int, command: Command, words: tuple[str, ...], cwd: str
) -> str:
    walk.note(
        run.ins.source,
        f"`{_short(command.text)}`",
        "kept as step {step} (at {at}), but the base's `apt` packages are installed before "
        "any step: a package from this repository is not found there; install it in the step",
    )
    return KEEP


# ---------------------------------------------------------------- pip


def _pip(
    walk: Walk, run: Run, command: Command, words: tuple[str, ...], cwd: str, soft: str
) -> str:
    pip = parse_pip(words)
    if pip.action == "install":
        run.has_install = True
        _install(walk, run.ins, pip, cwd, soft, command)
        return DROP
    if pip.action == "uninstall":
        names = tuple(canonicalize_name(name) for name in pip.args)
        walk.installs.append(Uninstall(names, run.ins.source, run.position))
        return DROP
    if pip.action == "cache":
        return DROP
    return KEEP


def _install(
    walk: Walk, ins: Instruction, pip: PipCommand, cwd: str, soft: str, command: Command
) -> None:
    source = ins.source
    reqs: list[tuple[str, str, tuple[Source, ...]]] = []
    for word in pip.args:
        _positional(walk, ins, word, cwd, reqs)
    for name in (*pip.requirement_files, *pip.constraint_files):
        reqs += _requirements_file(walk, ins, name, cwd, constraint=name in pip.constraint_files)
    for editable in pip.editables:
        walk.note(
            source, f"pip install -e {editable}", "left out: the app is copied, not installed"
        )
    _indexes(walk, source, pip, cwd)
    _install_notes(walk, source, pip, reqs, command)
    index = pip.index_url if pip.index_url and not _is_pypi(pip.index_url) else None
    install = Install(tuple(reqs), source, walk.position, pip.upgrade, soft, index)
    walk.installs.append(install)


def _positional(
    walk: Walk,
    ins: Instruction,
    word: str,
    cwd: str,
    reqs: list[tuple[str, str, tuple[Source, ...]]],
) -> None:
    spec = read_spec(word)
    if spec.name == "pip":
        return  # pip itself: builder's Dockerfile brings its own
    if spec.text is None or spec.name is None:
        problem = "a variable with no known value" if "$" in word else spec.problem
        walk.note(ins.source, f"pip install {word}", f"left out: {problem}")
        return
    if spec.wheel_dir is not None:
        _wheelhouse(walk, ins.source, walk.in_image(spec.wheel_dir, cwd), word)
    reqs.append((spec.name, spec.text, (ins.source,)))


def _wheelhouse(walk: Walk, source: Source, directory: PurePosixPath, what: str) -> None:
    host = walk.host_for(directory)
    if host is None or not host.is_dir():
        walk.note(source, what, "left out: its directory is not copied from the build context")
        return
    walk.consumed.add(host.resolve())
    if all(f.value != str(host.resolve()) for f in walk.wheelhouse):
        walk.wheelhouse.append(Fact(str(host.resolve()), (source,)))


def _requirements_file(
    walk: Walk, ins: Instruction, name: str, cwd: str, constraint: bool
) -> list[tuple[str, str, tuple[Source, ...]]]:
    in_image = walk.in_image(name, cwd)
    flag = "-c" if constraint else "-r"
    clone = walk.clone_at(in_image)
    if clone is not None:
        walk.note(
            ins.source,
            f"pip install {flag} {name} (in the clone of {clone.url})",
            "left out: init does not fetch repositories; add the file with "
            "`builder init --requirements <your checkout>/"
            + str(in_image.relative_to(clone.dest))
            + "`",
        )
        return []
    host = walk.host_for(in_image)
    if host is None or not host.is_file():
        walk.note(
            ins.source, f"pip install {flag} {name}", "left out: not copied from the build context"
        )
        return []
    check_readable(host)
    return _file_lines(walk, ins, host, constraint)


def _file_lines(
    walk: Walk, ins: Instruction, host: Path, constraint: bool
) -> list[tuple[str, str, tuple[Source, ...]]]:
    lines, read = read_requirements_file(host)
    walk.consumed.update(p.resolve() for p in read)
    out = []
    for line in lines:
        where = Source(display_name(ins, line.path), line.line)
        if line.invalid:
            walk.note(where, "a requirements line pip refuses", f"left out: {line.invalid}")
        elif line.spec is not None and line.spec.text and constraint:
            out += _file_option(walk, ins, where, line.path, ("constraint", line.spec.text), False)
        elif line.spec is not None and line.spec.text and line.spec.name:
            out.append((line.spec.name, line.spec.text, (where, ins.source)))
        elif line.spec is not None:
            walk.note(where, "a requirements line", f"left out: {line.spec.problem}")
        elif line.option is not None:
            out += _file_option(walk, ins, where, line.path, line.option, constraint)
    return out


def _file_option(
    walk: Walk,
    ins: Instruction,
    where: Source,
    path: Path,
    option: tuple[str, str],
    constraint: bool,
) -> list[tuple[str, str, tuple[Source, ...]]]:
    key, value = option
    if key == "constraint" and value:
        walk.note(
            where,
            f"the constraint {value}",
            "a requirement: the matrix has no constraints list, so it also installs the package",
        )
        name = read_spec(value).name
        return [(name, value, (where, ins.source))] if name else []
    if key == "index_url" and not _is_pypi(value):
        walk.index_urls.append(Fact(value, (where, ins.source)))
    elif key == "extra_index_url":
        walk.extra_index_urls.append(Fact(value, (where, ins.source)))
    elif key == "find_links":
        _find_links(walk, where, value, path.parent)
    return []


def display_name(ins: Instruction, path: Path) -> str:
    """A file of the build context, named as the Dockerfile was given (`w/requirements.txt`)."""
    directory = PurePosixPath(ins.source.file).parent
    try:
        relative = path.resolve().relative_to(ins.context.resolve())
    except ValueError:
        return str(path)
    return str(directory / relative) if str(directory) != "." else str(relative)


def _is_pypi(url: str) -> bool:
    return url.rstrip("/") in [u.rstrip("/") for u in PYPI]


def _indexes(walk: Walk, source: Source, pip: PipCommand, cwd: str) -> None:
    walk.extra_index_urls += [Fact(url, (source,)) for url in pip.extra_index_urls]
    for link in pip.find_links:
        _find_links(walk, source, link, None, cwd)


def _find_links(
    walk: Walk, source: Source, link: str, base: Path | None, cwd: str | None = None
) -> None:
    if "://" in link:
        walk.note(
            source,
            f"--find-links {link}",
            "left out: a links page is not an index; download the wheels into a directory "
            "and name it in indexes.wheelhouse",
        )
        return
    if base is not None:
        host = (base / link).resolve()
        if host.is_dir():
            walk.wheelhouse.append(Fact(str(host), (source,)))
            return
    _wheelhouse(walk, source, walk.in_image(link, cwd), f"--find-links {link}")


def _install_notes(
    walk: Walk,
    source: Source,
    pip: PipCommand,
    reqs: list[tuple[str, str, tuple[Source, ...]]],
    command: Command,
) -> None:
    names = ", ".join(dict.fromkeys(name for name, _, _ in reqs)) or "nothing"
    earlier = any(isinstance(i, Install) and i.reqs for i in walk.installs)
    if pip.upgrade and earlier and reqs:
        walk.note(
            source,
            f"pip install -U {names} after earlier installs",
            "one joint resolution: the lock resolves every requirement together, so these "
            "cannot replace what earlier lines pinned (pip upgraded one install after another)",
        )
    if pip.no_build_isolation:
        walk.no_build_isolation.append(source)
        walk.note(
            source,
            f"pip install --no-build-isolation {names} (a source build against the installed torch)",
            "installed from the lock like everything else (wheels, --no-deps --require-hashes): "
            "`builder check` flags a package that needs a build (needs-build); a prebuilt wheel "
            "goes in indexes.wheelhouse",
        )
    if pip.no_deps:
        walk.note(
            source, f"pip install --no-deps {names}", "the lock resolves their dependencies too"
        )
    if pip.target:
        walk.note(source, f"`{_short(command.text)}`", "installed into the image's venv instead")


# ---------------------------------------------------------------- git


def _git(
    walk: Walk, run: Run, index: int, command: Command, words: tuple[str, ...], cwd: str
) -> str:
    args = list(words[1:])
    directory = cwd
    while args[:1] == ["-C"] and len(args) > 1:
        directory = str(walk.in_image(args[1], directory))
        args = args[2:]
    action = args[0] if args else ""
    if action == "clone":
        return _clone(walk, run, index, args[1:], directory)
    clone = walk.clone_at(walk.in_image(".", directory))
    if clone is None or action not in ("checkout", "reset", "fetch", "pull", "submodule", "switch"):
        return KEEP
    if action == "submodule":
        walk.note(run.ins.source, f"`{_short(command.text)}`", "app.git clones without submodules")
    rev = _revision(action, args[1:])
    if rev is not None:
        clone.rev, clone.rev_source = rev, run.ins.source
    clone.parts.append((len(walk.runs) - 1, index))
    return CLONE


def _revision(action: str, args: list[str]) -> str | None:
    positional = [a for a in args if not a.startswith("-")]
    if action in ("checkout", "switch") and "-b" not in args and positional:
        return positional[0]
    if action == "reset" and positional:
        return positional[-1]
    if action == "fetch" and positional and is_commit(positional[-1]):
        return positional[-1]
    return None


def is_commit(text: str) -> bool:
    return len(text) == 40 and set(text.lower()) <= HEX


def _clone(walk: Walk, run: Run, index: int, args: list[str], cwd: str) -> str:
    branch, positional = None, []
    while args:
        word = args.pop(0)
        if word in ("-b", "--branch") and args:
            branch = args.pop(0)
        elif word.startswith("--branch="):
            branch = word.partition("=")[2]
        elif word in ("--depth", "--filter", "-o", "--origin", "-c", "--config") and args:
            args.pop(0)
        elif not word.startswith("-"):
            positional.append(word)
    if not positional:
        return KEEP
    url = positional[0]
    if urllib.parse.urlsplit(url).hostname == "huggingface.co":
        _weights(walk, run, run.commands[index], ("git", "clone", url))
        return KEEP
    name = PurePosixPath(urllib.parse.urlsplit(url).path).name.removesuffix(".git")
    dest = walk.in_image(positional[1] if len(positional) > 1 else name, cwd)
    clone = Clone(url, dest, branch, run.ins.source, len(walk.runs) - 1, run.position)
    clone.parts.append((len(walk.runs) - 1, index))
    walk.clones.append(clone)
    return CLONE


# ---------------------------------------------------------------- weights


def _weights(walk: Walk, run: Run, command: Command, words: tuple[str, ...]) -> None:
    """A download of model weights at build time stays a step, with a note."""
    if not _downloads_weights(words):
        return
    if any(w in ("huggingface-cli", "hf") for w in words[:1]) or "HF_TOKEN" in command.text:
        run.secrets = tuple(dict.fromkeys((*run.secrets, "hf_token")))
    walk.note(
        run.ins.source,
        f"weights downloaded at build time (`{_short(command.text)}`)",
        "kept as step {step} (at {at}) with the hf_token secret: the lock does not pin them "
        "and they make the image tens of GB; download them at start-up into a volume "
        "(HF_HOME on /runpod-volume), or pin --revision",
    )


def _downloads_weights(words: tuple[str, ...]) -> bool:
    if not words:
        return False
    program = PurePosixPath(words[0]).name
    if program in ("huggingface-cli", "hf") and "download" in words[1:2]:
        return True
    if program == "git" and "clone" in words:
        return True  # only huggingface.co clones get here
    if program in ("wget", "curl", "aria2c"):
        return any(_weights_url(w) for w in words[1:])
    return program.startswith("python") and any(
        "snapshot_download" in w or "hf_hub_download" in w for w in words
    )


def _weights_url(word: str) -> bool:
    parts = urllib.parse.urlsplit(word)
    return bool(parts.scheme) and (
        parts.hostname == "huggingface.co" or PurePosixPath(parts.path).suffix in WEIGHT_SUFFIXES
    )


PROGRAMS: dict[str, Callable[[Walk, Run, int, Command, tuple[str, ...], str], str]] = {
    "apt-get": _apt,
    "apt": _apt,
    "rm": _rm,
    "conda": _conda,
    "mamba": _conda,
    "add-apt-repository": _add_apt_repository,
    "git": _git,
}
