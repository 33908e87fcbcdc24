"""Probe: inspect a model directory (diffusers or Wan native layout) without loading tensors.

Standard library only (torch, when importable, for free GPU memory); never imports builder.
`builder inspect` loads this file and calls `run`. As a probe, inside an image:

    python -I validate/model_dir.py OPTIONS_JSON      # see _runner.py: output, exit codes
    options: {"model_dir": str, "min_gpu_memory_gb": number | null}

The answer is one JSON line (the shared runner's record, with these details):

    {"probe": "model-dir", "status": "pass" | "fail" | "error" | "skipped", "reason": str,
     "evidence": str, "warnings": [], "details": {
        "model_dir": str,
        "layout": "diffusers" | "wan-native" | "unknown",
        "pipeline": str,              # WanPipeline, wan.WanT2V, ... or "unknown"
        "profile": "wan2.1" | "wan2.2" | "wan2.2-s2v" | "wan2.2-animate" | "multitalk" | "unknown",
        "experts": 0 | 1 | 2,
        "boundary_ratio": number | null,
        "components": [{"name": str, "path": str, "files": [str], "params": int,
                        "stored_bytes": int, "estimate": "header" | "file size",
                        "bytes": {"bf16": int, "fp16": int, "fp32": int}}],
        "total": {"params": int, "stored_bytes": int, "estimate": str, "bytes": {...}},
        "memory": {"need_bf16_bytes": int, "min_gpu_memory_gb": number | null,
                   "fits_min_gpu_memory": bool | null, "gpu": {...} | null,
                   "fits_free_gpu_memory": bool | null},
        "findings": [{"level": "error" | "warning" | "info", "path": str, "message": str}]}}

Safetensors sizes come from the headers (8-byte little-endian length, then JSON with each
tensor's dtype, shape and data offsets); .pth/.bin/.pt/.ckpt sizes are estimates from the file
size (2 bytes a parameter when the name says bf16/fp16, else 4).

Model files are untrusted: only regular files are opened (a FIFO would block), JSON must be
UTF-8 with finite numbers, a header's shapes must be non-negative integers whose product its
data bytes can hold, and its offsets must lie inside the file. A file that breaks a rule is an
error finding naming it, so the answer is always one line of strict JSON.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import stat
import struct
from pathlib import Path
from typing import Any, BinaryIO

PROBE = "model-dir"
DEFAULTS = {"model_dir": None, "min_gpu_memory_gb": None}
# The shared runner (options, output, exit codes), by path: never put validate/ on sys.path.
_RUNNER = importlib.util.spec_from_file_location("_runner", Path(__file__).with_name("_runner.py"))
runner = importlib.util.module_from_spec(_RUNNER)
_RUNNER.loader.exec_module(runner)
result = runner.results_for(PROBE)

GIB = 1024**3
MAX_HEADER_BYTES = 100 * 1024 * 1024
OTHER_WEIGHTS = (".pth", ".bin", ".pt", ".ckpt")
EXPERTS = ("high_noise_model", "low_noise_model")
VAES = {"Wan2.2_VAE.pth": "2.2", "Wan2.1_VAE.pth": "2.1"}
T5 = "models_t5_umt5-xxl-enc-bf16.pth"
CLIP = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
DIT = "diffusion_pytorch_model"
DTYPE_SUFFIXES = frozenset({"fp16", "bf16", "fp32", "fp8", "half"})  # model.fp16.safetensors
NATIVE_MARKERS = (*VAES, T5, *EXPERTS)
NATIVE_PIPELINES = {
    "t2v": "wan.WanT2V",
    "i2v": "wan.WanI2V",
    "ti2v": "wan.WanTI2V",
    "s2v": "wan.WanS2V",
    "animate": "wan.WanAnimate",
    "multitalk": "wan.MultiTalkPipeline",
}
PROFILES = {"animate": "wan2.2-animate", "s2v": "wan2.2-s2v", "multitalk": "multitalk"}


# --- weights -----------------------------------------------------------------------------------


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from a file; ValueError or OSError says what is wrong with it."""
    with _open_regular(path) as handle:
        data = handle.read(MAX_HEADER_BYTES + 1)
    if len(data) > MAX_HEADER_BYTES:
        raise ValueError(f"larger than {MAX_HEADER_BYTES} bytes")
    return _json_object(data)


def _json_object(data: bytes) -> dict[str, Any]:
    """Strict JSON (UTF-8, finite numbers: Python's json takes NaN and Infinity), an object."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 (byte {exc.start}: {exc.reason})") from None
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise ValueError("not valid JSON: nested too deeply") from None
    except ValueError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"not a JSON object: {_short(value)}")
    return value


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is out of range")
    return number


def _short(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _open_regular(path: Path) -> BinaryIO:
    """Open a file for reading, refusing anything but a regular file (a FIFO would block)."""
    handle = os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb")
    if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
        handle.close()
        raise ValueError("not a regular file")
    return handle


def read_safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """The JSON header of a .safetensors file and the size of its data, reading no tensor."""
    with _open_regular(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise ValueError("shorter than the 8-byte header length")
        (length,) = struct.unpack("<Q", prefix)
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise ValueError(f"header length {length} exceeds the file")
        blob = handle.read(length)
    try:
        return _json_object(blob), size - 8 - length
    except ValueError as exc:
        raise ValueError(f"header is {exc}") from None


def safetensors_size(path: Path) -> tuple[int, int]:
    """(parameters, stored bytes) of a .safetensors file, from its checked header."""
    header, data_bytes = read_safetensors_header(path)
    params = stored = 0
    for name, tensor in header.items():
        if name != "__metadata__":
            count, size = _tensor_size(name, tensor, data_bytes)
            params, stored = params + count, stored + size
    return params, stored


def _tensor_size(name: str, tensor: object, data_bytes: int) -> tuple[int, int]:
    """(elements, bytes) of one header entry: a shape of non-negative integers, offsets inside
    the data, and no more elements than its bytes can hold (at 8 a byte, for sub-byte dtypes)."""
    if not isinstance(tensor, dict):
        raise ValueError(f"tensor {name!r}: not a JSON object")
    shape, offsets = tensor.get("shape"), tensor.get("data_offsets")
    if not _naturals(shape):
        raise ValueError(
            f"tensor {name!r}: shape {_short(shape)} is not a list of non-negative integers"
        )
    if not (_naturals(offsets) and len(offsets) == 2 and offsets[0] <= offsets[1] <= data_bytes):
        where = f"[start, end] within the {data_bytes} data bytes"
        raise ValueError(f"tensor {name!r}: data_offsets {_short(offsets)} are not {where}")
    size = offsets[1] - offsets[0]
    count = _elements(shape, 8 * size)
    if count is None:
        message = f"shape {_short(shape)} has more elements than its {size} data bytes hold"
        raise ValueError(f"tensor {name!r}: {message}")
    return count, size


def _naturals(value: object) -> bool:
    """A JSON list of non-negative integers."""
    return isinstance(value, list) and all(
        isinstance(item, int) and not isinstance(item, bool) and item >= 0 for item in value
    )


def _elements(shape: list[int], limit: int) -> int | None:
    """The product of a shape, or None once it passes `limit` (not computed in full)."""
    if 0 in shape:
        return 0
    count = 1
    for dim in shape:
        count *= dim
        if count > limit:
            return None
    return count


def file_size_estimate(path: Path) -> tuple[int, int]:
    """(parameters, bytes) of a pickled checkpoint, guessed from its size and name."""
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise ValueError("not a regular file")
    half = any(tag in path.name.lower() for tag in ("bf16", "fp16", "half"))
    return info.st_size // (2 if half else 4), info.st_size


def weight_files(
    root: Path, directory: Path, prefix: str, findings: list[dict[str, str]]
) -> list[Path]:
    """The weight files of a directory: the shards of an index, else every weight file (also
    when the index is unreadable, which is a finding)."""
    indexes = sorted(directory.glob(f"{prefix}*.safetensors.index.json"), key=lambda p: len(p.name))
    shards = _index_shards(root, indexes[0], findings) if indexes else None
    if shards is not None:
        return shards
    for pattern in (".safetensors", *OTHER_WEIGHTS):
        files = _drop_variants(sorted(directory.glob(f"{prefix}*{pattern}")))
        if files:
            return files
    return []


def _index_shards(root: Path, index: Path, findings: list[dict[str, str]]) -> list[Path] | None:
    """The shards an index lists (each missing one is a finding); None if it is unreadable."""
    try:
        names = _shard_names(read_json_object(index))
    except (OSError, ValueError) as exc:
        findings.append(_finding("error", _rel(root, index), f"unreadable index: {_why(exc)}"))
        return None
    shards = [index.parent / name for name in names]
    for shard in shards:
        if not shard.exists():
            message = f"shard listed in {index.name} is missing"
            findings.append(_finding("error", _rel(root, shard), message))
    return [shard for shard in shards if shard.exists()]


def _shard_names(index: dict[str, Any]) -> list[str]:
    weight_map = index.get("weight_map", {})
    if not isinstance(weight_map, dict) or not all(map(_is_plain_name, weight_map.values())):
        raise ValueError("weight_map is not an object of tensor names to shard file names")
    return sorted(set(weight_map.values()))


def _is_plain_name(value: object) -> bool:
    """A file or folder name inside its directory (`a.safetensors`, not `../a` or `/dev/zero`)."""
    return isinstance(value, str) and value not in ("", ".", "..") and not {"/", "\0"} & set(value)


def _why(exc: Exception) -> str:
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc)


def _drop_variants(files: list[Path]) -> list[Path]:
    """`model.fp16.safetensors` is a variant of `model.safetensors`: count one of them."""
    plain = [path for path in files if Path(path.stem).suffix.lstrip(".") not in DTYPE_SUFFIXES]
    return plain or files


def measure(
    name: str, root: Path, files: list[Path], findings: list[dict[str, str]]
) -> dict[str, Any]:
    """One component's parameters and bytes."""
    params = stored = 0
    estimated = False
    for path in files:
        try:
            size = (
                safetensors_size(path)
                if path.suffix == ".safetensors"
                else file_size_estimate(path)
            )
        except (OSError, ValueError) as exc:
            findings.append(_finding("error", _rel(root, path), f"unreadable weights: {_why(exc)}"))
            continue
        params, stored = params + size[0], stored + size[1]
        estimated = estimated or path.suffix != ".safetensors"
    paths = [_rel(root, path) for path in files]
    where = {"name": name, "path": _common(paths), "files": paths}
    return where | _sizes(params, stored, estimated)


def _sizes(params: int, stored: int, estimated: bool) -> dict[str, Any]:
    return {
        "params": params,
        "stored_bytes": stored,
        "estimate": "file size" if estimated else "header",
        "bytes": {"bf16": params * 2, "fp16": params * 2, "fp32": params * 4},
    }


def total(components: list[dict[str, Any]]) -> dict[str, Any]:
    params = sum(c["params"] for c in components)
    stored = sum(c["stored_bytes"] for c in components)
    estimated = any(c["estimate"] == "file size" for c in components)
    return _sizes(params, stored, estimated)


def _common(paths: list[str]) -> str:
    parents = {path.rsplit("/", 1)[0] if "/" in path else "." for path in paths}
    return parents.pop() if len(parents) == 1 else "."


# --- layouts -----------------------------------------------------------------------------------


def _finding(level: str, path: Path | str, message: str) -> dict[str, str]:
    return {"level": level, "path": str(path), "message": message}


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def _read_json(root: Path, path: Path, findings: list[dict[str, str]]) -> dict[str, Any]:
    """A JSON object from a file, or {} and a finding naming the file."""
    try:
        return read_json_object(path)
    except (OSError, ValueError) as exc:
        findings.append(_finding("error", _rel(root, path), f"unreadable: {_why(exc)}"))
        return {}


def detect_layout(root: Path) -> str:
    if (root / "model_index.json").exists():  # not only a regular file: a FIFO is a finding
        return "diffusers"
    if any((root / name).exists() for name in NATIVE_MARKERS):
        return "wan-native"
    return "unknown"


def _kind(*texts: str) -> str:
    """animate, s2v or multitalk when a class name, model type or file name says so."""
    text = " ".join(texts).lower()
    for kind, words in (("animate", ("animate",)), ("s2v", ("s2v", "speech", "sound"))):
        if any(word in text for word in words):
            return kind
    return "multitalk" if "multitalk" in text else ""


def guess_profile(kind: str, experts: int, vae: str) -> str:
    if kind:
        return PROFILES[kind]
    if experts == 2 or vae == "2.2":
        return "wan2.2"
    return "wan2.1" if vae == "2.1" else "unknown"


def inspect_diffusers(root: Path, findings: list[dict[str, str]]) -> dict[str, Any]:
    index = _read_json(root, root / "model_index.json", findings)
    listed = _listed(index, findings)
    present = [k for k, v in listed.items() if any(part is not None for part in v)]
    findings += _diffusers_files(root, listed, present)
    experts = sum(1 for name in ("transformer", "transformer_2") if name in present)
    boundary = index.get("boundary_ratio")
    if boundary is not None and "transformer_2" not in present:
        findings.append(
            _finding("error", "model_index.json", "boundary_ratio without transformer_2")
        )
    class_name = str(index.get("_class_name", "unknown"))
    is_wan = class_name.startswith("Wan") or experts == 2
    vae = _vae(root, findings) if is_wan else ""
    profile = guess_profile(_kind(class_name), experts, vae) if is_wan else "unknown"
    components = _components(root, present, findings)
    return _layout("diffusers", class_name, profile, experts, boundary, components)


def _listed(index: dict[str, Any], findings: list[dict[str, str]]) -> dict[str, list[Any]]:
    """The components model_index.json lists (`"vae": ["diffusers", "AutoencoderKLWan"]`)."""
    listed = {}
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list):
            continue
        if _is_plain_name(name):
            listed[name] = value
        else:
            message = f"{_short(name)} is not a component folder name"
            findings.append(_finding("error", "model_index.json", message))
    return listed


def _diffusers_files(
    root: Path, listed: dict[str, Any], present: list[str]
) -> list[dict[str, str]]:
    found = [
        _finding("error", f"{name}/", "listed in model_index.json but missing")
        for name in present
        if not (root / name).is_dir()
    ]
    for path in sorted(root.iterdir()):
        if path.is_dir() and not path.name.startswith(".") and path.name not in listed:
            found.append(_finding("warning", f"{path.name}/", "not listed in model_index.json"))
    return found


def _vae(root: Path, findings: list[dict[str, str]]) -> str:
    """The Wan VAE generation of a diffusers `vae/` (z_dim 16: Wan2.1, 48: Wan2.2), or ''."""
    config = root / "vae" / "config.json"
    z_dim = _read_json(root, config, findings).get("z_dim") if config.exists() else None
    return {48: "2.2", 16: "2.1"}.get(z_dim, "") if isinstance(z_dim, int) else ""


def _components(
    root: Path, names: list[str], findings: list[dict[str, str]]
) -> list[dict[str, Any]]:
    """Measured component directories; one with a config.json is a model and needs weights."""
    components = []
    for name in names:
        directory = root / name
        files = weight_files(root, directory, "", findings) if directory.is_dir() else []
        if files:
            components.append(measure(name, root, files, findings))
        elif (directory / "config.json").is_file():
            findings.append(_finding("error", f"{name}/", "has config.json but no weight files"))
    return components


def inspect_native(root: Path, findings: list[dict[str, str]]) -> dict[str, Any]:
    config = _native_config(root, findings)
    model_type = str(config.get("model_type", ""))
    vae = next((version for name, version in VAES.items() if (root / name).is_file()), "")
    experts = 2 if any((root / name).is_dir() for name in EXPERTS) else 1
    findings += _native_missing(root, vae, experts)
    names = " ".join(path.name for path in root.iterdir())
    kind = _kind(model_type, str(config.get("_class_name", "")), names)
    pipeline = NATIVE_PIPELINES.get(kind or model_type, "unknown")
    components = _native_components(root, experts, findings)
    profile = guess_profile(kind, experts, vae)
    return _layout("wan-native", pipeline, profile, experts, None, components)


def _native_config(root: Path, findings: list[dict[str, str]]) -> dict[str, Any]:
    for candidate in (root / "config.json", *(root / name / "config.json" for name in EXPERTS)):
        if candidate.exists():
            return _read_json(root, candidate, findings)
    return {}


def _native_missing(root: Path, vae: str, experts: int) -> list[dict[str, str]]:
    found = []
    if not vae:
        found.append(_finding("error", " or ".join(VAES), "no VAE weights"))
    if not (root / T5).is_file():
        found.append(_finding("error", T5, "no T5 text-encoder weights"))
    for name in EXPERTS if experts == 2 else ():
        if not (root / name).is_dir():
            found.append(_finding("error", f"{name}/", "a two-expert model needs both experts"))
    if experts == 1 and not list(root.glob(f"{DIT}*.safetensors*")):
        found.append(_finding("error", f"{DIT}*.safetensors", "no diffusion-model weights"))
    return found


def _native_components(
    root: Path, experts: int, findings: list[dict[str, str]]
) -> list[dict[str, Any]]:
    components = _components(root, [name for name in EXPERTS if (root / name).is_dir()], findings)
    dit = weight_files(root, root, DIT, findings)
    if dit:
        components.append(measure("transformer", root, dit, findings))
    known = {*VAES, T5, CLIP, "multitalk.safetensors"}
    for path in sorted(p for p in root.iterdir() if _is_weight(p) and not p.name.startswith(DIT)):
        components.append(measure(path.stem, root, [path], findings))
        if path.name not in known:
            findings.append(_finding("warning", path.name, "unexpected weight file at the top"))
    others = [p.name for p in root.iterdir() if p.is_dir() and p.name not in EXPERTS]
    return components + _components(root, sorted(n for n in others if n[0] != "."), findings)


def _is_weight(path: Path) -> bool:
    return path.is_file() and path.suffix in (".safetensors", *OTHER_WEIGHTS)


def _layout(
    layout: str,
    pipeline: str,
    profile: str,
    experts: int,
    boundary: object,
    components: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "layout": layout,
        "pipeline": pipeline,
        "profile": profile,
        "experts": experts,
        "boundary_ratio": boundary,
        "components": components,
    }


# --- memory and verdict ------------------------------------------------------------------------


def memory(
    need: int, min_gpu_memory_gb: float | None, gpu: dict[str, Any] | None
) -> dict[str, Any]:
    """Compare the bf16 weights with the given minimum and, in a GPU container, free memory."""
    given = None if min_gpu_memory_gb is None else need <= min_gpu_memory_gb * GIB
    free = None if gpu is None else need <= gpu["free_bytes"]
    return {
        "need_bf16_bytes": need,
        "min_gpu_memory_gb": min_gpu_memory_gb,
        "fits_min_gpu_memory": given,
        "gpu": gpu,
        "fits_free_gpu_memory": free,
    }


def inspect_dir(
    root: Path, min_gpu_memory_gb: float | None, gpu: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Everything the probe reports about one model directory (the `details`)."""
    findings: list[dict[str, str]] = []
    layout = detect_layout(root)
    if layout == "diffusers":
        details = inspect_diffusers(root, findings)
        if any((root / name).exists() for name in NATIVE_MARKERS):
            findings.append(_finding("warning", ".", "Wan native files next to model_index.json"))
    elif layout == "wan-native":
        details = inspect_native(root, findings)
    else:
        details = _layout("unknown", "unknown", "unknown", 0, None, [])
    details["total"] = total(details["components"])
    need = details["total"]["bytes"]["bf16"]
    details["memory"] = memory(need, min_gpu_memory_gb, gpu)
    return {"model_dir": str(root), **details, "findings": findings}


def verdict(details: dict[str, Any]) -> tuple[str, str]:
    """(status, reason) of an inspection."""
    errors = [f for f in details["findings"] if f["level"] == "error"]
    need = details["memory"]["need_bf16_bytes"] / GIB
    if details["layout"] == "unknown":
        return "fail", "no model_index.json and no Wan native files: not a known model layout"
    if errors:
        first = errors[0]
        return "fail", f"{len(errors)} problem(s); first: {first['path']}: {first['message']}"
    if details["memory"]["fits_min_gpu_memory"] is False:
        given = details["memory"]["min_gpu_memory_gb"]
        return "fail", f"bf16 weights need {need:.1f} GiB, more than the {given:g} GiB given"
    if details["memory"]["fits_free_gpu_memory"] is False:
        free = details["memory"]["gpu"]["free_bytes"] / GIB
        return "fail", f"bf16 weights need {need:.1f} GiB, more than the {free:.1f} GiB free"
    return "pass", (
        f"{details['layout']} layout, {details['pipeline']}, profile {details['profile']}, "
        f"{details['experts']} expert(s), {details['total']['params']:,} parameters, "
        f"{need:.1f} GiB in bf16"
    )


def evidence(details: dict[str, Any]) -> str:
    """What the verdict rests on: the layout, each component measured, each finding."""
    lines = [
        f"{details['layout']} layout: pipeline {details['pipeline']}, "
        f"profile {details['profile']}, {details['experts']} expert(s)"
    ]
    lines += [
        f"{c['path']}: {len(c['files'])} file(s), {c['params']:,} parameters ({c['estimate']})"
        for c in details["components"]
    ]
    lines += [f"{f['level']}: {f['path']}: {f['message']}" for f in details["findings"]]
    return "\n".join(lines)


def run(options: dict[str, Any], gpu: dict[str, Any] | None = None) -> dict[str, Any]:
    """The probe's answer for its options; `gpu` is free device memory when known."""
    model_dir = options.get("model_dir")
    if not model_dir:
        return result("skipped", "no model_dir in the options", {})
    root = Path(model_dir)
    if not root.is_dir():
        return result("error", f"{root}: not a directory", {})
    gib = options.get("min_gpu_memory_gb")
    if gib is not None and not _positive_number(gib):
        return result("error", f"min_gpu_memory_gb: not a finite positive number: {gib!r}", {})
    details = inspect_dir(root, gib, gpu)
    status, reason = verdict(details)
    return result(status, reason, details, evidence(details))


def _positive_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and value > 0


def cuda_memory() -> dict[str, Any] | None:
    """Free and total memory of CUDA device 0, when torch is there and sees a GPU."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    free, total_bytes = torch.cuda.mem_get_info()
    return {"device": torch.cuda.get_device_name(0), "free_bytes": free, "total_bytes": total_bytes}


if __name__ == "__main__":
    runner.main(PROBE, DEFAULTS, lambda options: run(options, cuda_memory()))
