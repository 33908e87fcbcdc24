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

Rules applied with or without a GPU (the fleet: the GPUs the image will land on, passed in as
the `fleet` option, `{"gpus": [{"name", "sm", "label"}], "driver", "driver_rules"}`):
- The arch list is read from the installed torch as it is, not from a device:
  torch._C._cuda_getArchFlags() (what torch.cuda.get_arch_list() splits, which returns [] without
  a GPU), else the string compiled into torch/lib/libtorch_python.so.
- Each fleet GPU needs a kernel image: SASS for its sm_XY, SASS of the same major and a lower
  minor (sm_80 runs on sm_86 and sm_89), or PTX (compute_XY) no newer than it, which the driver
  JIT-compiles at first use (a warning). Arch-specific entries (sm_90a, sm_100f) are left out:
  torch's general kernels are never built for those alone.
- Every other installed distribution with CUDA kernels (flash-attn, xformers, sageattention,
  torchvision, ...) is judged the same way, from the `.nv_fatbin` sections of its ELF shared
  objects: each fatbin container (magic 0xBA55ED50) lists its entries' kind (1 PTX, 2 SASS) and
  arch. torch itself, triton and NVIDIA's own libraries (nvidia-*, cuda-*) are not scanned.
- The driver floor: torch's CUDA major needs at least the driver its rule names (CUDA's minor
  version compatibility); a fleet whose oldest driver is below fails.
A CPU build of torch makes the fleet not applicable. Fleet failures fail the probe even when
no GPU is visible; a fleet that passes without a GPU makes the probe pass (the device checks
were not run, said so in the reason).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import mmap
import os
import re
import struct
import time
import warnings
from pathlib import Path

PROBE = "cuda"
DEFAULTS = {"cuda": None, "gpu": "optional", "size": 512, "fleet": None, "extensions": True}
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


def kernel_for(capability: tuple[int, int], arch_list: list[str]) -> tuple[str, str | None]:
    """How a GPU of `capability` gets a kernel image from a build of `arch_list`, and from
    which entry: "sass" (its own sm_XY), "compatible" (SASS of the same major, lower minor),
    "ptx" (compute_XY no newer than it, JIT-compiled by the driver) or "none".
    builder/check/fleet.py applies the same rule to the committed table (a test ties them)."""
    sass = [(cc, a) for a in arch_list if (cc := arch_cc(a, "sm_"))]
    ptx = [(cc, a) for a in arch_list if (cc := arch_cc(a, "compute_"))]
    exact = [a for cc, a in sass if cc == capability]
    if exact:
        return "sass", exact[0]
    same = [(cc, a) for cc, a in sass if cc[0] == capability[0] and cc[1] < capability[1]]
    if same:
        return "compatible", max(same)[1]
    jit = [(cc, a) for cc, a in ptx if cc <= capability]
    if jit:
        return "ptx", max(jit)[1]
    return "none", None


def check_arch(capability: tuple[int, int], arch_list: list[str]) -> tuple[str, str]:
    sm = f"sm_{capability[0]}{capability[1]}"
    kind, _ = kernel_for(capability, arch_list)
    if kind == "sass":
        return "pass", f"{sm} is in the build's arch list"
    if kind == "compatible":
        return "pass", f"{sm} runs the build's same-major binaries ({arch_list})"
    if kind == "ptx":
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


# --- the fleet: arch lists read from the installed files, no GPU needed ----------------------

# The arch list torch compiles into libtorch_python.so: a NUL-terminated string of words. Its
# start is not anchored: the linker may place it right after a string without a terminator
# (2.8's reads "...std::string ipc_hsm_70 sm_75 ...").
ARCH_STRING = re.compile(rb"((?:sm|compute)_\d{2,3}[a-z]?(?: (?:sm|compute)_\d{2,3}[a-z]?)*)\x00")
TORCH_LIBRARY = ("lib", "libtorch_python.so")
ELF_MAGIC = b"\x7fELF"
FATBIN_MAGIC = 0xBA55ED50
FATBIN_SECTIONS = (".nv_fatbin", "__nv_relfatbin")
FATBIN_KINDS = {1: "compute", 2: "sm"}  # an entry's kind: PTX, or an ELF cubin (SASS)
SHT_NOBITS = 8
# Distributions not scanned for kernels: torch is judged by its own arch list, triton compiles
# its kernels for the device at run time, and NVIDIA's libraries follow the CUDA version.
NOT_EXTENSIONS = re.compile(r"^(?:torch|triton|pytorch-triton(?:-.+)?|nvidia-.+|cuda-.+)$")
MAX_FILES = 20  # per distribution, in the details
MARK = {"pass": "✓", "warn": "~", "fail": "✗", "unknown": "?"}


def arch_flags_in_binary(data) -> str | None:
    """The arch list compiled into a binary (bytes or mmap), e.g. "sm_50 sm_60 sm_70 sm_75
    sm_80 sm_86 sm_90"; None when there is none. Of several candidates the longest wins."""
    found = {match.group(1).decode("ascii") for match in ARCH_STRING.finditer(data)}
    return max(found, key=lambda text: (len(text.split()), text)) if found else None


def library_arch_flags(path: Path) -> str | None:
    """arch_flags_in_binary of a file, mapped rather than read (the library is 30+ MB)."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return arch_flags_in_binary(data)


def torch_arch_flags(torch) -> tuple[list[str] | None, str]:
    """(arch list, where it was read): torch._C._cuda_getArchFlags(), which needs no GPU, else
    the string in torch/lib/libtorch_python.so."""
    getter = getattr(torch._C, "_cuda_getArchFlags", None)
    flags = getter() if getter is not None else None
    if flags:
        return str(flags).split(), "torch._C._cuda_getArchFlags()"
    library = Path(torch.__file__).parent.joinpath(*TORCH_LIBRARY)
    text = library_arch_flags(library) if library.is_file() else None
    return (text.split() if text else None), f"torch/{'/'.join(TORCH_LIBRARY)}"


def sm_capability(sm: str) -> tuple[int, int]:
    """(12, 0) for "sm_120"."""
    cc = arch_cc(sm, "sm_")
    if cc is None:
        raise ValueError(f"not an sm_XY architecture: {sm!r}")
    return cc


def judge(capability: tuple[int, int], arch_list: list[str], what: str) -> tuple[str, str]:
    """(status, reason) of one GPU against one build: pass, warn (PTX JIT) or fail."""
    sm = f"sm_{capability[0]}{capability[1]}"
    kind, entry = kernel_for(capability, arch_list)
    if kind == "sass":
        return "pass", f"{sm} SASS in {what}"
    if kind == "compatible":
        return "pass", f"runs {entry} SASS of {what} (same major)"
    if kind == "ptx":
        return "warn", f"{sm} not in {what}: JIT from {entry} PTX at first use"
    return "fail", f"{sm} not in {what}"


def elf_sections(data) -> dict[str, tuple[int, int]]:
    """{name: (offset, size)} of an ELF64 little-endian file's sections with contents."""
    if len(data) < 64 or data[:4] != ELF_MAGIC or data[4] != 2 or data[5] != 1:
        return {}
    (table,) = struct.unpack_from("<Q", data, 0x28)
    entry_size, count, names_index = struct.unpack_from("<HHH", data, 0x3A)
    if (
        not table
        or entry_size < 64
        or names_index >= count
        or table + count * entry_size > len(data)
    ):
        return {}
    headers = [struct.unpack_from("<IIQQQQ", data, table + i * entry_size) for i in range(count)]
    names_at, names_size = headers[names_index][4], headers[names_index][5]
    names = bytes(data[names_at : names_at + names_size])
    out = {}
    for name_at, kind, _, _, offset, size in headers:
        name = names[name_at : names.find(b"\0", name_at)].decode("ascii", "replace")
        if kind != SHT_NOBITS and offset + size <= len(data):
            out[name] = (offset, size)
    return out


def fatbin_entries(data, start: int, size: int) -> list[tuple[str, int]]:
    """(kind, arch) of every entry of the fatbin containers in data[start:start+size]: each
    container a 16-byte header (magic, version, header size, size of its entries), each entry
    a header (kind, version, header size, payload size, ..., arch at byte 28) and its payload."""
    out = []
    end, at = min(start + size, len(data)), start
    while at + 16 <= end:
        magic, _, header, total = struct.unpack_from("<IHHQ", data, at)
        if magic != FATBIN_MAGIC:
            at += 8  # containers are 8-byte aligned: step over the padding between them
            continue
        entry, stop = at + header, min(at + header + total, end)
        while entry + 32 <= stop:
            kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, entry)
            (arch,) = struct.unpack_from("<I", data, entry + 28)
            if kind in FATBIN_KINDS:
                out.append((FATBIN_KINDS[kind], arch))
            if entry_header == 0:
                break
            entry += entry_header + payload
        at = max(stop, at + 16)
    return out


def fatbin_archs(path: Path) -> list[str]:
    """The sm_XY (SASS) and compute_XY (PTX) entries of a shared object's fatbins, sorted."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != ELF_MAGIC:
                return []
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                sections = elf_sections(data)
                found = {
                    entry
                    for name in FATBIN_SECTIONS
                    if name in sections
                    for entry in fatbin_entries(data, *sections[name])
                }
    except (OSError, ValueError, struct.error):
        return []
    return [f"{kind}_{arch}" for kind, arch in sorted(found, key=lambda e: (e[1], e[0] != "sm"))]


def is_shared_object(name: str) -> bool:
    return name.endswith(".so") or ".so." in name


def cuda_extensions() -> list[dict]:
    """Every installed distribution (bar NOT_EXTENSIONS) whose shared objects carry CUDA
    kernels: its name, version and each such file's arch list."""
    out: dict[str, dict] = {}
    for dist in importlib.metadata.distributions():
        name = runner.canonical(dist.metadata["Name"] or "")
        if not name or name in out or NOT_EXTENSIONS.match(name):
            continue
        files = []
        for record in dist.files or ():
            if is_shared_object(record.name):
                archs = fatbin_archs(Path(dist.locate_file(record)))
                if archs:
                    files.append({"path": str(record), "arch": archs})
        if files:
            out[name] = {"dist": name, "version": dist.version, "files": files}
    return [out[name] for name in sorted(out)]


def judge_extension(extension: dict, gpus: list[dict]) -> dict:
    """An extension against each fleet GPU: every file of it must have a kernel image."""
    rows = []
    for gpu in gpus:
        capability = sm_capability(gpu["sm"])
        verdicts = [
            (judge(capability, f["arch"], f"{extension['dist']} {f['path']}"), f)
            for f in extension["files"]
        ]
        worst = max(verdicts, key=lambda v: ("pass", "warn", "fail").index(v[0][0]))
        rows.append(
            {"gpu": gpu["name"], "sm": gpu["sm"], "status": worst[0][0], "reason": worst[0][1]}
        )
    arch = sorted({a for f in extension["files"] for a in f["arch"]}, key=arch_order)
    return {
        "dist": extension["dist"],
        "version": extension["version"],
        "arch": arch,
        "files": extension["files"][:MAX_FILES],
        "file_count": len(extension["files"]),
        "gpus": rows,
    }


def arch_order(entry: str) -> tuple[int, int]:
    cc = arch_cc(entry, "sm_") or arch_cc(entry, "compute_") or (0, 0)
    return cc[0] * 10 + cc[1], entry.startswith("compute_")


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", str(text)))


def driver_verdict(fleet: dict, torch_cuda: str) -> dict | None:
    """The fleet's oldest driver against what torch's CUDA major needs (minor version
    compatibility: any 12.x runtime on a driver >= the 12.x floor)."""
    driver = fleet.get("driver")
    if not driver:
        return None
    major = major_minor(torch_cuda)[0]
    rule = next((r for r in fleet.get("driver_rules") or () if r["cuda_major"] == major), None)
    if rule is None:
        return {"status": "warn", "reason": f"no driver rule for CUDA {major}.x", "source": ""}
    ok = version_tuple(driver) >= version_tuple(rule["driver"])
    reason = (
        f"torch's CUDA {torch_cuda} runtime needs NVIDIA driver >= {rule['driver']}; the "
        f"fleet's oldest driver is {driver}"
        + ("" if ok else ": 'The NVIDIA driver on your system is too old'")
    )
    return {"status": "pass" if ok else "fail", "reason": reason, "source": rule["source"]}


def fleet_report(torch, opts: dict) -> dict:
    """The fleet, GPU by GPU, against the installed torch and CUDA extensions: no GPU needed."""
    fleet = opts.get("fleet") or {}
    gpus = list(fleet.get("gpus") or [])
    declared = bool(gpus or fleet.get("driver"))
    if torch.version.cuda is None:
        verdict = "fleet: not applicable (CPU build)"
        return {"declared": declared, "applicable": False, "verdict": verdict, "gpus": []}
    arch, source = torch_arch_flags(torch)
    build = f"torch {torch.__version__}"
    report = {
        "declared": declared,
        "applicable": True,
        "build": build,
        "torch_cuda": torch.version.cuda,
        "arch": arch,
        "arch_source": source,
    }
    report["gpus"] = [judge_gpu(gpu, arch, build) for gpu in gpus]
    found = cuda_extensions() if opts.get("extensions", True) else []
    report["extensions"] = [judge_extension(e, gpus) for e in found]
    report["driver"] = driver_verdict(fleet, torch.version.cuda)
    report["verdict"] = fleet_line(report)
    return report


def judge_gpu(gpu: dict, arch: list[str] | None, build: str) -> dict:
    row = {"gpu": gpu["name"], "sm": gpu["sm"], "label": gpu.get("label") or gpu["name"]}
    if arch is None:
        return {**row, "status": "unknown", "reason": f"the arch list of {build} is unread"}
    status, reason = judge(sm_capability(gpu["sm"]), arch, build)
    return {**row, "status": status, "reason": reason}


def fleet_line(report: dict) -> str:
    """`fleet: rtx4090 ✓ h100 ✓ rtx5090 ✗ (sm_120 not in torch 2.4.1+cu121)`."""
    parts = []
    for row in report["gpus"]:
        problems = [row] + [
            g for e in report.get("extensions", ()) for g in e["gpus"] if g["gpu"] == row["gpu"]
        ]
        worst = max(problems, key=lambda g: list(MARK).index(g["status"]))
        why = f" ({worst['reason']})" if worst["status"] != "pass" else ""
        parts.append(f"{row['gpu']} {MARK[worst['status']]}{why}")
    driver = report.get("driver")
    if driver and driver["status"] != "pass":
        parts.append(f"driver {MARK[driver['status']]} ({driver['reason']})")
    return "fleet: " + (" ".join(parts) if parts else "none declared")


def fleet_problems(report: dict) -> tuple[list[str], list[str]]:
    """(failures, warnings) of a fleet report, one line each."""
    failed, warned = [], []
    rows = [(f"fleet {g['gpu']}", g) for g in report.get("gpus", ())]
    rows += [(f"fleet {g['gpu']}", g) for e in report.get("extensions", ()) for g in e["gpus"]]
    if report.get("driver"):
        rows.append(("fleet driver", report["driver"]))
    for what, row in rows:
        line = f"{what}: {row['reason']}"
        if row["status"] == "fail":
            failed.append(line)
        elif row["status"] in ("warn", "unknown"):
            warned.append(line)
    return failed, warned


def no_gpu(opts: dict, why: str, details: dict) -> dict:
    if opts["gpu"] == "required":
        return result("fail", f"{why}, but the cell requires a GPU", details)
    return result("skipped", why, details)


def without_gpu(opts: dict, details: dict) -> dict:
    """No GPU visible: the fleet verdict decides, else the probe is skipped (or fails when
    the cell requires a GPU)."""
    fleet = details["fleet"]
    failed, warned = fleet_problems(fleet)
    if opts["gpu"] == "required":
        failed.insert(0, "no GPU visible, but the cell requires a GPU")
    if failed:
        return result("fail", "; ".join(failed), details, "", warned)
    if fleet["declared"] and fleet["applicable"]:
        why = f"{fleet['verdict']} (no GPU visible: the device checks did not run)"
        return result("pass", why, details, "", warned)
    why = "no GPU visible" + (f"; {fleet['verdict']}" if fleet["declared"] else "")
    return result("skipped", why, details, "", warned)


def run(opts: dict) -> dict:
    if importlib.util.find_spec("torch") is None:
        return no_gpu(opts, "torch is not installed", {})
    import torch

    env = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")}
    details = {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "env": env}
    details["fleet"] = fleet_report(torch, opts)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        visible = torch.cuda.is_available()
    # A driver too old or a broken install shows up only as a warning from is_available().
    details["cuda_init_warnings"] = [str(w.message) for w in caught]
    if not visible:
        return without_gpu(opts, details)
    details.update(gpu_checks(torch, opts))
    checks = details["checks"]
    failed = [f"{k}: {c['detail']}" for k, c in checks.items() if c["status"] == "fail"]
    warned = [f"{k}: {c['detail']}" for k, c in checks.items() if c["status"] == "warn"]
    fleet_failed, fleet_warned = fleet_problems(details["fleet"])
    failed, warned = failed + fleet_failed, warned + fleet_warned
    if failed:
        return result("fail", "; ".join(failed), details, "", warned)
    return result(
        "pass", f"{details['facts']['device']}: all CUDA checks passed", details, "", warned
    )


if __name__ == "__main__":
    runner.main(PROBE, DEFAULTS, run)
