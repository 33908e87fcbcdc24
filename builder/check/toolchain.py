"""What a base can compile with, as far as `check` can tell without an engine: nvcc (the CUDA
toolkit) and a C/C++ compiler.

From the image's tag, the way the publishers name their flavours:

    nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04        devel: the CUDA toolkit (nvcc) and gcc/g++
    nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04      runtime (and -base-): no nvcc, no compiler
    pytorch/pytorch:2.4.1-cuda12.4-cudnn9-devel       devel (or -runtime)
    runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04
    nvcr.io/nvidia/pytorch:24.05-py3                  NGC's PyTorch: the full CUDA toolkit
    python:3.11, python:3.11-bookworm                 gcc (built on buildpack-deps; not -slim)

and from the base's `apt` list: build-essential, gcc, g++ or clang (a compiler); cuda-nvcc-*,
cuda-toolkit-* or nvidia-cuda-toolkit (nvcc). Anything else is unknown (None): a tag can lie or
say nothing, and only a look inside the image (`nvcc --version`) would tell.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from docker_image.digest import InvalidDigest
from docker_image.reference import InvalidReference, Reference

from builder.matrix import Base

COMPILERS = frozenset({"build-essential", "gcc", "g++", "clang"})
_NVCC_APT = re.compile(r"^(?:cuda-nvcc|cuda-toolkit|nvidia-cuda-toolkit)(?:-[0-9-]+)?$")
_FLAVOURS = ("devel", "runtime", "base")
_FULL_TOOLKIT = ("nvidia/pytorch",)  # NGC images (nvcr.io/nvidia/pytorch) carry the toolkit
_NO_COMPILER = ("slim", "alpine")  # alpine3.19 too  # python image variants without buildpack-deps


@dataclass(frozen=True, kw_only=True)
class Toolchain:
    """What a base has to build sdists with; None: not known. `why_*` say how it is known."""

    nvcc: bool | None
    compiler: bool | None
    why_nvcc: str = ""
    why_compiler: str = ""
    devel: str | None = None  # the -devel variant of a -runtime or -base image, for hints


def toolchain(base: Base) -> Toolchain:
    """nvcc and a compiler: from the image's tag, then from the base's apt list."""
    from_tag = _from_tag(base.image)
    packages = {p.split("=", 1)[0] for p in base.apt}
    compilers = sorted(packages & COMPILERS)
    nvcc_apt = sorted(p for p in packages if _NVCC_APT.match(p))
    apt = f"bases.{base.name}.apt installs"
    return Toolchain(
        nvcc=True if nvcc_apt else from_tag.nvcc,
        compiler=True if compilers else from_tag.compiler,
        why_nvcc=f"{apt} {nvcc_apt[0]}" if nvcc_apt else from_tag.why_nvcc,
        why_compiler=f"{apt} {compilers[0]}" if compilers else from_tag.why_compiler,
        devel=from_tag.devel,
    )


def flavour(image: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, flavour) of an image reference; the flavour (devel, runtime, base) is
    a `-` separated token of the tag that says so, None otherwise."""
    try:
        parsed = Reference.parse(image)
    except (InvalidReference, InvalidDigest):
        return image, None, None
    name, tag = str(parsed["name"]), parsed["tag"]
    tokens = (tag or "").lower().split("-")
    return name, tag, next((t for t in tokens if t in _FLAVOURS), None)


def _from_tag(image: str) -> Toolchain:
    name, tag, kind = flavour(image)
    shown = f"{image}'s tag says -{kind}"
    if kind == "devel":
        return Toolchain(nvcc=True, compiler=True, why_nvcc=shown, why_compiler=shown)
    if kind in ("runtime", "base"):
        devel = f"{name}:{_devel_tag(tag or '', kind)}"
        return Toolchain(
            nvcc=False,
            compiler=False,
            why_nvcc=f"{shown}: CUDA libraries without nvcc",
            why_compiler=f"{shown}: no compiler",
            devel=devel,
        )
    repository = name.split("/", 1)[1] if name.startswith("nvcr.io/") else name
    if repository in _FULL_TOOLKIT:
        why = f"{image} is NGC's PyTorch image, which carries the CUDA toolkit"
        return Toolchain(nvcc=True, compiler=True, why_nvcc=why, why_compiler=why)
    if repository.removeprefix("docker.io/").removeprefix("library/") == "python" and tag:
        return _python_image(image, tag)
    return Toolchain(nvcc=None, compiler=None)


def _python_image(image: str, tag: str) -> Toolchain:
    """The official python image has gcc, except its -slim and -alpine variants."""
    if any(t.startswith(_NO_COMPILER) for t in tag.lower().split("-")):
        why = f"{image} is a -slim or -alpine python image: no compiler"
        return Toolchain(nvcc=False, compiler=False, why_compiler=why)
    why = f"{image} is the full python image (built on buildpack-deps, with gcc)"
    return Toolchain(nvcc=False, compiler=True, why_compiler=why)


def _devel_tag(tag: str, kind: str) -> str:
    """`12.4.1-cudnn-runtime-ubuntu22.04` -> `12.4.1-cudnn-devel-ubuntu22.04`."""
    return "-".join("devel" if t.lower() == kind else t for t in tag.split("-"))
