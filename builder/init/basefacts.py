"""What an image tag says about a base: its Python, CUDA, preinstalled torch and kind.

The reference is split by the distribution reference grammar (docker-image-py); the tag is
then read token by token (`-` separated), the way the publishers name them:

    runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04   torch 2.4.0, Python 3.11, CUDA 12.4
    runpod/pytorch:1.0.2-cu1281-torch280-ubuntu2404            torch 2.8.0, CUDA 12.8, Ubuntu 24.04
    nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04                 CUDA 12.4, devel, Ubuntu 22.04
    pytorch/pytorch:2.4.1-cuda12.4-cudnn9-runtime              torch 2.4.1, CUDA 12.4, runtime
    python:3.11-slim                                           Python 3.11, no CUDA

Every fact is a guess (a tag can lie, and a Python not in the tag is the distribution's
default): the output marks each one `from the tag; verify`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from docker_image.digest import InvalidDigest
from docker_image.reference import InvalidReference, Reference

# The python3 each release ships (what `apt-get install python3` gives on that base).
UBUNTU_PYTHON: Mapping[str, str] = MappingProxyType(
    {"18.04": "3.6", "20.04": "3.8", "22.04": "3.10", "24.04": "3.12"}
)
DEBIAN_PYTHON: Mapping[str, str] = MappingProxyType(
    {
        "buster": "3.7",
        "10": "3.7",
        "bullseye": "3.9",
        "11": "3.9",
        "bookworm": "3.11",
        "12": "3.11",
        "trixie": "3.13",
        "13": "3.13",
    }
)
KINDS = ("devel", "runtime", "base")
# Repositories whose first version token is torch's (runpod's old scheme needs a `pyX.Y` too).
TORCH_FIRST = ("pytorch/pytorch",)
CUDA_FIRST = ("nvidia/cuda",)
PYTHON_FIRST = ("python",)


@dataclass(frozen=True)
class BaseFacts:
    """What the tag tells; `why_python` says where the Python guess comes from."""

    repository: str  # without registry and `library/`
    python: str | None = None
    why_python: str = ""
    cuda: str | None = None
    cpu: bool = False  # known to have no CUDA (python, debian, ubuntu images)
    torch: str | None = None
    kind: str | None = None
    known: bool = False  # a repository whose tags builder reads

    @property
    def vendor(self) -> str:
        """The base-name prefix: `runpod`, `nvidia`, `pytorch`, `python`."""
        return self.repository.split("/")[0]


def repository(image: str) -> tuple[str, str | None] | None:
    """(repository without registry, tag) of an image reference; None if it is not one."""
    try:
        parsed = Reference.parse(image)
    except (InvalidReference, InvalidDigest):
        return None
    parts = str(parsed["name"]).split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    if parts and parts[0] == "library":
        parts = parts[1:]
    return "/".join(parts), parsed["tag"]


def facts_for(image: str) -> BaseFacts:
    """The facts an image's tag states, as far as builder knows the repository's scheme."""
    found = repository(image)
    if found is None:
        return BaseFacts(repository=image)
    name, tag = found
    tokens = (tag or "").split("-")
    facts = _read_tokens(name, tokens)
    if name in ("ubuntu", "debian") and tag:
        facts = _distribution(name, tag)
    return facts


def _read_tokens(name: str, tokens: list[str]) -> BaseFacts:
    known = name in (*TORCH_FIRST, *CUDA_FIRST, *PYTHON_FIRST) or name == "runpod/pytorch"
    values: dict[str, str] = {}
    for token in tokens:
        _token(token, values)
    first = tokens[0] if tokens and _is_version(tokens[0]) else None
    if first and (name in TORCH_FIRST or (name == "runpod/pytorch" and "python" in values)):
        values.setdefault("torch", first)
    if first and name in CUDA_FIRST:
        values.setdefault("cuda", _major_minor(first))
    if first and name in PYTHON_FIRST:
        values.setdefault("python", _major_minor(first))
        values["why_python"] = "the python image's version"
    values.setdefault("why_python", "in the tag" if "python" in values else "")
    if "python" not in values:
        _python_guess(name, values)
    return BaseFacts(
        repository=name,
        python=values.get("python"),
        why_python=values.get("why_python", ""),
        cuda=values.get("cuda"),
        cpu=name in PYTHON_FIRST,
        torch=values.get("torch"),
        kind=values.get("kind"),
        known=known,
    )


def _token(token: str, values: dict[str, str]) -> None:
    """One tag token: py3.11, cuda12.4.1, cu1281, torch280, devel, ubuntu22.04, ubuntu2404."""
    lower = token.lower()
    if lower.startswith("py") and _is_version(lower[2:]):
        values["python"] = _major_minor(lower[2:])
    elif lower.startswith("cuda") and _is_version(lower[4:]):
        values["cuda"] = _major_minor(lower[4:])
    elif lower.startswith("cu") and lower[2:].isdigit() and len(lower) in (5, 6):
        digits = lower[2:]
        values["cuda"] = f"{int(digits[:2])}.{digits[2]}"
    elif lower.startswith("torch") and lower[5:].isdigit() and len(lower) >= 8:
        digits = lower[5:]
        values["torch"] = f"{digits[0]}.{int(digits[1:-1])}.{digits[-1]}"
    elif lower in KINDS:
        values["kind"] = lower
    elif lower.startswith("ubuntu") and lower[6:]:
        release = lower[6:] if "." in lower else f"{lower[6:8]}.{lower[8:]}"
        values["ubuntu"] = release


def _python_guess(name: str, values: dict[str, str]) -> None:
    torch = values.get("torch")
    if name in TORCH_FIRST and torch and _is_version(torch):
        major, minor = (int(p) for p in torch.split(".")[:2])
        values["python"] = "3.11" if (major, minor) >= (2, 4) else "3.10"
        values["why_python"] = (
            f"pytorch/pytorch {major}.{minor} images carry conda's Python {values['python']}"
        )
    elif values.get("ubuntu") in UBUNTU_PYTHON:
        values["python"] = UBUNTU_PYTHON[values["ubuntu"]]
        values["why_python"] = f"Ubuntu {values['ubuntu']}'s python3"


def _distribution(name: str, tag: str) -> BaseFacts:
    table = UBUNTU_PYTHON if name == "ubuntu" else DEBIAN_PYTHON
    release = tag.split("-")[0]
    python = table.get(release)
    why = f"{name} {release}'s python3" if python else ""
    return BaseFacts(repository=name, python=python, why_python=why, cpu=True, known=True)


def _is_version(text: str) -> bool:
    parts = text.split(".")
    return 2 <= len(parts) <= 4 and all(p.isdigit() for p in parts)


def _major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])
