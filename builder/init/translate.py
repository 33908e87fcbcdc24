"""The instructions of a chain, read in order into a `Walk` (RUN lines in `builder.init.runs`)."""

from __future__ import annotations

import glob
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from builder.init.model import Fact, HealthDraft, Source
from builder.init.runs import run_instruction
from builder.init.stages import Chain, Instruction, unquote
from builder.init.walk import Copy, Walk
from builder.matrix import ENV_NAME
from builder.yamlnodes import UNSAFE

# Build-time settings that only steer apt and pip inside the Dockerfile; builder's own
# Dockerfile sets what it needs, so these are dropped (nothing else reads them at run time).
BUILD_ONLY_ENV = (
    "DEBIAN_FRONTEND",
    "PIP_NO_CACHE_DIR",
    "PIP_DISABLE_PIP_VERSION_CHECK",
    "PIP_ROOT_USER_ACTION",
    "PIP_NO_INPUT",
    "PIP_BREAK_SYSTEM_PACKAGES",
    "PIP_PREFER_BINARY",
)
ARCHIVES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")
WEIGHTS = (".safetensors", ".bin", ".pth", ".pt", ".ckpt", ".gguf", ".onnx", ".h5")
USER_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-")
WORKDIR_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._/-")
DURATION_UNITS = ("ms", "s", "m", "h")


def read_chain(chain: Chain, out_dir: Path, args: dict[str, str]) -> Walk:
    """Every instruction of `chain`, in build order."""
    walk = Walk(chain=chain, out_dir=out_dir, args=dict(args))
    for stage in chain.off_path:
        what = f"stage {stage.name or stage.index} (FROM {stage.image})"
        walk.note(
            stage.source,
            f"{what}: a build stage off the final image's path",
            "not translated: the matrix renders its own stages; what the final image copies "
            "from it is listed at its COPY --from",
        )
    for ins in chain.instructions:
        HANDLERS.get(ins.cmd, _unknown)(walk, ins)
    return walk


def _unknown(walk: Walk, ins: Instruction) -> None:
    walk.step()
    walk.note(ins.source, f"{ins.cmd} instruction", "left out: the matrix has no equivalent")


def _ignored(walk: Walk, ins: Instruction) -> None:
    walk.step()


def _label(walk: Walk, ins: Instruction) -> None:
    walk.step()
    walk.note(ins.source, ins.original, "left out: builder labels the image itself (OCI labels)")


def _volume(walk: Walk, ins: Instruction) -> None:
    walk.step()
    walk.note(ins.source, ins.original, "left out: mount volumes when the container runs")


def _shell(walk: Walk, ins: Instruction) -> None:
    walk.step()
    walk.pipefail = "pipefail" in ins.value
    walk.note(
        ins.source,
        f"SHELL {list(ins.value)}",
        "left out: steps run under builder's shell, /bin/sh -eu (no bash-only syntax)",
    )


# ---------------------------------------------------------------- ENV, ARG, WORKDIR, USER


def _env(walk: Walk, ins: Instruction) -> None:
    walk.step()
    for key, raw in zip(ins.value[::2], ins.value[1::2], strict=False):
        _env_pair(walk, ins.source, key, unquote(raw))


def _env_pair(walk: Walk, source: Source, key: str, value: str) -> None:
    if key in BUILD_ONLY_ENV:
        return
    if key == "PIP_INDEX_URL":
        walk.index_urls.append(Fact(value, (source,)))
        return
    if key == "PIP_EXTRA_INDEX_URL":
        walk.extra_index_urls += [Fact(url, (source,)) for url in value.split()]
        return
    if "$" in value or UNSAFE.search(value) or not ENV_NAME.match(key):
        walk.note(
            source,
            f"ENV {key}={value}",
            "left out of image.env: its values are literal, so a $variable would not expand",
        )
        return
    if key == "TORCH_CUDA_ARCH_LIST":
        walk.note(
            source,
            f"ENV TORCH_CUDA_ARCH_LIST={value}",
            "kept in image.env, which only the final image sees: it no longer steers source "
            "builds (the lock installs wheels; put a wheel built for these archs in "
            "indexes.wheelhouse)",
        )
    walk.env[key] = Fact(value, (source,))


def _arg(walk: Walk, ins: Instruction) -> None:
    walk.step()
    for word in ins.value:
        name, eq, default = word.partition("=")
        if eq:
            walk.args[name] = unquote(default)
        if name == "TORCH_CUDA_ARCH_LIST":
            walk.note(
                ins.source,
                f"ARG {word}",
                "left out: the lock installs wheels, so no source build reads it",
            )
        if "TOKEN" in name.upper() or "SECRET" in name.upper():
            walk.note(
                ins.source,
                f"ARG {name}: a secret as a build argument (it stays in the image history)",
                "steps that use it get HF_TOKEN as the hf_token BuildKit secret instead",
            )


def _workdir(walk: Walk, ins: Instruction) -> None:
    walk.step()
    path = str(walk.in_image(ins.value[0] if ins.value else "/"))
    if "$" in path or not set(path) <= WORKDIR_CHARS:
        walk.note(ins.source, ins.original, "left out: image.workdir is a plain absolute path")
        return
    walk.workdir = path
    walk.workdir_fact = Fact(path, (ins.source,))


def _user(walk: Walk, ins: Instruction) -> None:
    walk.step()
    name, _, group = (ins.value[0] if ins.value else "").partition(":")
    if name in ("root", "0"):
        walk.user, walk.non_root = None, None
        return
    if name and name[0] in USER_CHARS - set("0123456789-") and set(name) <= USER_CHARS:
        walk.user, walk.non_root = Fact(name, (ins.source,)), ins.source
        if group:
            walk.note(ins.source, ins.original, f"image.user {name}: builder makes its group")
        return
    walk.note(
        ins.source,
        ins.original,
        "left out: image.user takes a user name (builder makes it with uid 10001); "
        "the image runs as root until you set one",
    )


# ---------------------------------------------------------------- CMD, ENTRYPOINT, EXPOSE, HEALTHCHECK


def _argv(ins: Instruction, value: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(value) if ins.json else ("/bin/sh", "-c", " ".join(value))


def _exec_form(walk: Walk, ins: Instruction) -> tuple[tuple[str, ...], Source] | None:
    argv = _argv(ins, ins.value)
    if not argv or any(UNSAFE.search(word) for word in argv):
        walk.note(ins.source, ins.original, "left out: no $( ${ or backticks in image values")
        return None
    return argv, ins.source


def _cmd(walk: Walk, ins: Instruction) -> None:
    walk.step()
    walk.cmd = _exec_form(walk, ins)


def _entrypoint(walk: Walk, ins: Instruction) -> None:
    walk.step()
    walk.entrypoint = _exec_form(walk, ins)


def _expose(walk: Walk, ins: Instruction) -> None:
    walk.step()
    for word in ins.value:
        port, _, protocol = word.partition("/")
        if port.isdigit() and 1 <= int(port) <= 65535 and protocol in ("", "tcp"):
            walk.expose.append((int(port), ins.source))
        else:
            walk.note(ins.source, f"EXPOSE {word}", "left out: image.expose takes TCP ports")


def _healthcheck(walk: Walk, ins: Instruction) -> None:
    walk.step()
    if not ins.value or ins.value[0].upper() == "NONE":
        walk.healthcheck = None
        return
    argv = _argv(ins, ins.value[1:])
    options = {f.partition("=")[0].lstrip("-"): f.partition("=")[2] for f in ins.flags}
    durations = {k: options.get(k) for k in ("interval", "timeout")}
    bad = [k for k, v in durations.items() if v is not None and not _duration(v)]
    for key in [*bad, *(k for k in options if k not in ("interval", "timeout", "retries"))]:
        walk.note(ins.source, f"HEALTHCHECK --{key}", "left out: the matrix has no equivalent")
    retries = options.get("retries")
    walk.healthcheck = HealthDraft(
        cmd=argv,
        source=ins.source,
        interval=durations["interval"] if "interval" not in bad else None,
        timeout=durations["timeout"] if "timeout" not in bad else None,
        retries=int(retries)
        if retries and retries.isdigit() and 1 <= int(retries) <= 1000
        else None,
    )


def _duration(text: str) -> bool:
    unit = next((u for u in DURATION_UNITS if text.endswith(u) and text[: -len(u)].isdigit()), "")
    return bool(unit) and text[0] != "0" and len(text) - len(unit) <= 6


# ---------------------------------------------------------------- COPY and ADD


def _copy(walk: Walk, ins: Instruction) -> None:
    position = walk.step()
    stage = ins.flag("from")
    words = [w for w in ins.value if w]
    if stage is not None:
        walk.note(
            ins.source,
            ins.original,
            f"left out: the matrix cannot copy from {'stage' if _is_stage(walk, stage) else 'image'} "
            f"{stage}; build the file into the app, or produce it with a step",
        )
        return
    if len(words) < 2:
        walk.note(ins.source, ins.original, "left out: no source or no destination")
        return
    dest, sources = words[-1], words[:-1]
    into = dest.endswith("/") or dest in (".", "./") or len(sources) > 1
    for word in sources:
        _copy_source(walk, ins, word, walk.in_image(dest), into, position)


def _is_stage(walk: Walk, name: str) -> bool:
    stages = walk.chain.off_path
    return any(s.name == name.lower() or str(s.index) == name for s in stages)


def _copy_source(
    walk: Walk, ins: Instruction, word: str, dest: PurePosixPath, into: bool, position: int
) -> None:
    if "://" in word:
        weights = PurePosixPath(word.partition("?")[0]).suffix in WEIGHTS
        walk.note(
            ins.source,
            f"{ins.cmd} {word}",
            "left out: weights are not part of the image's lock; download them at start-up "
            "into a volume"
            if weights
            else "left out: download it in a step (`steps`), or add the file to the app",
        )
        return
    matches = sorted(glob.glob(str(ins.context / word))) if glob.has_magic(word) else []
    hosts = [Path(m) for m in matches] or [ins.context / word]
    for host in hosts:
        if not host.exists():
            walk.note(ins.source, f"{ins.cmd} {word}", f"left out: not found in {ins.context}")
            continue
        if ins.cmd == "ADD" and host.name.endswith(ARCHIVES):
            walk.note(ins.source, f"ADD {word}", "copied as the archive: ADD would extract it")
        is_dir = host.is_dir()
        walk.copies.append(
            Copy(host.resolve(), dest, is_dir, into or len(hosts) > 1, ins.source, position)
        )


HANDLERS: dict[str, Callable[[Walk, Instruction], None]] = {
    "RUN": run_instruction,
    "COPY": _copy,
    "ADD": _copy,
    "ENV": _env,
    "ARG": _arg,
    "WORKDIR": _workdir,
    "USER": _user,
    "CMD": _cmd,
    "ENTRYPOINT": _entrypoint,
    "EXPOSE": _expose,
    "HEALTHCHECK": _healthcheck,
    "SHELL": _shell,
    "LABEL": _label,
    "VOLUME": _volume,
    "MAINTAINER": _ignored,
}
