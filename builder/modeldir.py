"""`builder inspect`: a model directory's layout, pipeline class, profile and memory estimate.

The logic is the standalone probe `validate/model_dir.py` (standard library only, so it also runs
inside images); this module loads it from the data folder and formats its answer. The JSON output
is the probe's object, documented in that file.
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from builder.errors import CELLS_FAILED, OK, InputError
from builder.resources import data_dir

GIB = 1024**3


def load_probe(name: str) -> ModuleType:
    """Import `validate/<name>.py` from the data folder, without putting it on sys.path."""
    path = data_dir("validate") / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"builder_probe_{name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the probe {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def inspect_model_dir(model_dir: Path, min_gpu_memory_gb: float | None) -> dict[str, Any]:
    """The probe's answer for a model directory on this machine (no GPU reading)."""
    if not model_dir.is_dir():
        raise InputError(f"{model_dir}: no such directory", "pass a downloaded model directory")
    if min_gpu_memory_gb is not None and not math.isfinite(min_gpu_memory_gb):
        hint = "give the GPU's memory in GiB, for example --gpu-memory-gb 80"
        raise InputError(f"--gpu-memory-gb {min_gpu_memory_gb}: not a finite number", hint)
    options = {"model_dir": str(model_dir), "min_gpu_memory_gb": min_gpu_memory_gb}
    answer: dict[str, Any] = load_probe("model_dir").run(options)
    return answer


def exit_code(answer: Mapping[str, Any]) -> int:
    return OK if answer["status"] in ("pass", "skipped") else CELLS_FAILED


def run_inspect(model_dir: Path, fmt: str, min_gpu_memory_gb: float | None) -> tuple[str, int]:
    """What `builder inspect` prints and its exit code."""
    answer = inspect_model_dir(model_dir, min_gpu_memory_gb)
    # The probe refuses NaN and Infinity; allow_nan=False keeps a slip from printing non-JSON.
    text = json.dumps(answer, indent=2, allow_nan=False) if fmt == "json" else render_text(answer)
    return text, exit_code(answer)


def render_text(answer: Mapping[str, Any]) -> str:
    """The probe's answer for people."""
    details = answer["details"]
    lines = [
        f"model dir: {details['model_dir']}",
        f"layout: {details['layout']}  pipeline: {details['pipeline']}  "
        f"profile: {details['profile']}  experts: {details['experts']}"
        + _boundary(details["boundary_ratio"]),
        "",
        *_components_text(details["components"], details["total"]),
        "",
        _memory_text(details["memory"]),
    ]
    findings = [f"  {f['level']}: {f['path']}: {f['message']}" for f in details["findings"]]
    lines += ["", "findings:", *findings] if findings else []
    lines += ["", f"result: {answer['status']}: {answer['reason']}"]
    return "\n".join(lines)


def _boundary(ratio: object) -> str:
    return "" if ratio is None else f"  boundary_ratio: {ratio}"


def _components_text(components: list[Mapping[str, Any]], total: Mapping[str, Any]) -> list[str]:
    rows = [(c["name"], c) for c in components] + [("total", total)]
    width = max(len(name) for name, _ in rows)
    header = (
        f"  {'component':<{width}} {'params':>10} {'bf16/fp16':>10} {'fp32':>10}  measured from"
    )
    return ["weights:", header, *(_size_row(name, sizes, width) for name, sizes in rows)]


def _size_row(name: str, sizes: Mapping[str, Any], width: int) -> str:
    params, fp32 = _count(sizes["params"]), _bytes(sizes["bytes"]["fp32"])
    bf16 = _bytes(sizes["bytes"]["bf16"])
    return f"  {name:<{width}} {params:>10} {bf16:>10} {fp32:>10}  {sizes['estimate']}"


def _memory_text(memory: Mapping[str, Any]) -> str:
    need = f"bf16 weights need {_bytes(memory['need_bf16_bytes'])}"
    if memory["fits_min_gpu_memory"] is None:
        return f"memory: {need} (pass --gpu-memory-gb to compare)"
    verb = "fit" if memory["fits_min_gpu_memory"] else "do not fit"
    return f"memory: {need}; they {verb} in {memory['min_gpu_memory_gb']:g} GiB"


def _count(value: int) -> str:
    for size, unit in ((10**9, "B"), (10**6, "M"), (10**3, "K")):
        if value >= size:
            return f"{value / size:.2f}{unit}"
    return str(value)


def _bytes(value: int) -> str:
    for size, unit in ((GIB, "GiB"), (1024**2, "MiB"), (1024, "KiB")):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value} B"
