"""Probe: torch's CUDA build fits the cell and really computes on the visible GPU.

Run inside the image as ``python -I validate/cuda.py OPTIONS_JSON`` (see ``_runner.py``:
options, output, exit codes). Standard library only.

Rules applied when a GPU is visible:
- CUDA version (minor-version compatibility): torch.version.cuda must have the cell's major
  version and a minor version no newer than the cell's. A torch built for 12.1 runs on a 12.4
  base/driver; one built for 12.4 on a 12.1 base may call into APIs the runtime lacks.
- cuDNN: the runtime version must equal the version torch was compiled with; the same major and
  a newer minor is accepted with a warning (torch's own rule), anything else fails.
- Architecture: the device's sm_XY must be in torch.cuda.get_arch_list(), or a same-major
  sm_XW with W <= Y (binary compatible); a compute_XY (PTX) entry no newer than the device is
  accepted with a warning, since kernels are then JIT-compiled on first use.
- Compute: a matmul and a conv2d in fp16, and in bf16 when supported, give finite results close
  to the fp32 ones.
"""

from __future__ import annotations

import importlib.util
import os
import time
import warnings
from pathlib import Path

PROBE = "cuda"
DEFAULTS = {"cuda": None, "gpu": "optional", "size": 512}
# The shared runner (options, output, exit codes), by path: never put validate/ on sys.path.
_RUNNER = importlib.util.spec_from_file_location("_runner", Path(__file__).with_name("_runner.py"))
runner = importlib.util.module_from_spec(_RUNNER)
_RUNNER.loader.exec_module(runner)
result = runner.results_for(PROBE)


def major_minor(version: str) -> tuple[int, int]:
    parts = [int(p) for p in str(version).split(".")[:2]]
    return parts[0], parts[1] if len(parts) > 1 else 0


def check_cuda_version(torch_cuda: str | None, cell_cuda: str | None) -> tuple[str, str]:
    if torch_cuda is None:
        return "fail", "torch is a CPU-only build (torch.version.cuda is None)"
    if cell_cuda is None:
        return "warn", f"torch built for CUDA {torch_cuda}; the cell names no CUDA version"
    (tmaj, tmin), (cmaj, cmin) = major_minor(torch_cuda), major_minor(cell_cuda)
    if tmaj == cmaj and tmin <= cmin:
        return "pass", f"torch CUDA {torch_cuda} runs on the cell's CUDA {cell_cuda}"
    return (
        "fail",
        f"torch built for CUDA {torch_cuda} needs {tmaj}.{tmin}+ (same major), cell has {cell_cuda}",
    )


def cudnn_triple(version: int) -> tuple[int, int, int]:
    """cudnn.version() encodes 8.9.7 as 8907 and 9.1.0 as 90100."""
    base = 10000 if version >= 90000 else 1000
    return version // base, version % base // 100, version % 100


def check_cudnn(torch) -> tuple[str, str]:
    if not torch.backends.cudnn.is_available():
        return "fail", "cuDNN is not available to torch"
    runtime = cudnn_triple(torch.backends.cudnn.version())
    getter = getattr(getattr(torch._C, "_cudnn", None), "getCompileVersion", None)
    if getter is None:
        return "warn", f"cuDNN {runtime}; this torch does not expose its compile-time version"
    compiled = tuple(getter())
    if runtime == compiled:
        return "pass", f"cuDNN runtime {runtime} == compiled {compiled}"
    if runtime[0] == compiled[0] and runtime[1:] >= compiled[1:]:
        return "warn", f"cuDNN runtime {runtime} is newer than compiled {compiled} (same major)"
    return "fail", f"cuDNN runtime {runtime} does not match compiled {compiled}"


def arch_cc(arch: str, prefix: str) -> tuple[int, int] | None:
    """(major, minor) of "sm_86" / "compute_90"; None for other prefixes and "sm_90a"-style."""
    digits = arch[len(prefix) :]
    if not arch.startswith(prefix) or not digits.isdigit():
        return None
    return int(digits[:-1]), int(digits[-1])


def check_arch(capability: tuple[int, int], arch_list: list[str]) -> tuple[str, str]:
    sm = f"sm_{capability[0]}{capability[1]}"
    cubins = [cc for cc in (arch_cc(a, "sm_") for a in arch_list) if cc]
    ptx = [cc for cc in (arch_cc(a, "compute_") for a in arch_list) if cc]
    if capability in cubins:
        return "pass", f"{sm} is in the build's arch list"
    if any(cc[0] == capability[0] and cc[1] <= capability[1] for cc in cubins):
        return "pass", f"{sm} runs the build's same-major binaries ({arch_list})"
    if any(cc <= capability for cc in ptx):
        return "warn", f"{sm} is not in {arch_list}; its PTX will be JIT-compiled at first use"
    return "fail", f"{sm} is not supported by this build (arch list {arch_list})"


def time_op(torch, fn) -> tuple[object, float]:
    fn()  # warm up: the first call pays for kernel selection and lazy loading
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, round(time.perf_counter() - start, 6)


def check_compute(torch, dtype, size: int) -> dict:
    """Matmul and conv2d in dtype on the GPU: finite and close to the fp32 result."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    a, b = (torch.randn(size, size, device="cuda", generator=gen) for _ in range(2))
    x = torch.randn(2, 8, 32, 32, device="cuda", generator=gen)
    w = torch.randn(16, 8, 3, 3, device="cuda", generator=gen)
    ops = {"matmul": (lambda: a @ b, lambda: a.to(dtype) @ b.to(dtype))}
    conv = torch.nn.functional.conv2d
    ops["conv2d"] = (
        lambda: conv(x, w, padding=1),
        lambda: conv(x.to(dtype), w.to(dtype), padding=1),
    )
    report = {}
    for name, (reference, low) in ops.items():
        out, seconds = time_op(torch, low)
        want = reference().float()
        error = ((out.float() - want).norm() / want.norm()).item()
        finite = bool(torch.isfinite(out).all().item())
        ok = finite and error < 0.05
        report[name] = {
            "ok": ok,
            "finite": finite,
            "rel_error": round(error, 6),
            "seconds": seconds,
        }
    return report


def compute_verdict(torch, dtype, opts: dict) -> tuple[tuple[str, str], dict]:
    """((status, detail), per-op report); a kernel that cannot launch is a failure, not a crash."""
    try:
        compute = check_compute(torch, dtype, int(opts["size"]))
    except RuntimeError as exc:  # e.g. "no kernel image is available for execution on the device"
        return ("fail", f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"), {}
    ok = all(op["ok"] for op in compute.values())
    worst = max(op["rel_error"] for op in compute.values())
    verdict = "finite and close to fp32" if ok else "non-finite or far from fp32"
    return ("pass" if ok else "fail", f"matmul, conv2d {verdict} (rel error {worst:.2g})"), compute


def gpu_facts(torch) -> dict:
    props = torch.cuda.get_device_properties(0)
    return {
        "device": props.name,
        "device_count": torch.cuda.device_count(),
        "capability": list(torch.cuda.get_device_capability(0)),
        "memory_gib": round(props.total_memory / 2**30, 2),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "arch_list": torch.cuda.get_arch_list(),
    }


def gpu_checks(torch, opts: dict) -> dict:
    facts = gpu_facts(torch)
    checks = {
        "cuda_version": check_cuda_version(torch.version.cuda, opts["cuda"]),
        "cudnn": check_cudnn(torch),
        "arch": check_arch(tuple(facts["capability"]), facts["arch_list"]),
    }
    dtypes = {"fp16": torch.float16}
    if torch.cuda.is_bf16_supported():
        dtypes["bf16"] = torch.bfloat16
    for label, dtype in dtypes.items():
        checks[f"compute_{label}"], facts[f"compute_{label}"] = compute_verdict(torch, dtype, opts)
    return {
        "facts": facts,
        "checks": {k: {"status": s, "detail": d} for k, (s, d) in checks.items()},
    }


def no_gpu(opts: dict, why: str, details: dict) -> dict:
    if opts["gpu"] == "required":
        return result("fail", f"{why}, but the cell requires a GPU", details)
    return result("skipped", why, details)


def run(opts: dict) -> dict:
    if importlib.util.find_spec("torch") is None:
        return no_gpu(opts, "torch is not installed", {})
    import torch

    env = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")}
    details = {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "env": env}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        visible = torch.cuda.is_available()
    # A driver too old or a broken install shows up only as a warning from is_available().
    details["cuda_init_warnings"] = [str(w.message) for w in caught]
    if not visible:
        return no_gpu(opts, "no GPU visible", details)
    details.update(gpu_checks(torch, opts))
    checks = details["checks"]
    failed = [f"{k}: {c['detail']}" for k, c in checks.items() if c["status"] == "fail"]
    warned = [f"{k}: {c['detail']}" for k, c in checks.items() if c["status"] == "warn"]
    if failed:
        return result("fail", "; ".join(failed), details, "", warned)
    return result(
        "pass", f"{details['facts']['device']}: all CUDA checks passed", details, "", warned
    )


if __name__ == "__main__":
    runner.main(PROBE, DEFAULTS, run)
