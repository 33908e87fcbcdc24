"""Probe: the image's video and audio stack round-trips real files.

Run inside the image as ``python -I validate/media.py OPTIONS_JSON`` (see ``_runner.py``:
options, output, exit codes). Standard library only.

Sub-checks: ffmpeg runs; an MP4 written with imageio (libx264, else mpeg4) reads back with
decord and PyAV with the right frame count and size; a WAV written with soundfile reads back
with librosa and resamples 16 kHz -> 22050 Hz to the right length. A library that is not
installed skips its sub-check unless option ``require`` names it; one that is installed but
does not work fails the probe. Files are written only under a temporary directory.

The video checks (ffmpeg subprocesses, mostly waiting) run in a thread beside the audio ones
(mostly librosa's import, whose numba gufuncs compile eagerly: over 10 s on two cores). Option
``jit_cache`` names a directory for numba's cache (NUMBA_CACHE_DIR) that outlives the probe's
container, so a re-probe of the same installed librosa (a pin bump that reuses its layer) loads
the compiled gufuncs instead of compiling them again; numba checks each entry against the source
file's stamp, its bytecode, its own version and the CPU.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import os
import shutil
import subprocess
import tempfile
import time
import traceback
import wave
from pathlib import Path

PROBE = "media"
DEFAULTS = {"require": [], "frames": 16, "size": 32, "timeout": 60, "jit_cache": None}
# The shared runner (options, output, exit codes), by path: never put validate/ on sys.path.
_RUNNER = importlib.util.spec_from_file_location("_runner", Path(__file__).with_name("_runner.py"))
runner = importlib.util.module_from_spec(_RUNNER)
_RUNNER.loader.exec_module(runner)
result = runner.results_for(PROBE)


class Skip(Exception):
    """A sub-check that cannot run here (its library is not installed)."""


def need(module: str):
    """Import a library a sub-check uses, or skip the sub-check when it is not installed."""
    if importlib.util.find_spec(module) is None:
        raise Skip(f"{module} is not installed")
    return __import__(module)


def find_ffmpeg() -> str:
    if importlib.util.find_spec("imageio_ffmpeg"):
        return need("imageio_ffmpeg").get_ffmpeg_exe()
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise Skip("neither imageio-ffmpeg nor an ffmpeg on PATH")
    return exe


def check_ffmpeg(ctx: dict) -> dict:
    exe = find_ffmpeg()
    proc = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=ctx["timeout"])
    if proc.returncode != 0:
        raise RuntimeError(f"{exe} -version exited {proc.returncode}: {proc.stderr[-300:]}")
    return {"exe": exe, "version": proc.stdout.splitlines()[0]}


def test_frames(count: int, size: int):
    numpy = need("numpy")
    ramp = numpy.linspace(0, 255, size, dtype=numpy.uint8)
    frames = numpy.zeros((count, size, size, 3), dtype=numpy.uint8)
    for i in range(count):
        frames[i, :, :, 0] = ramp[None, :]
        frames[i, :, :, 1] = ramp[:, None]
        frames[i, :, :, 2] = (i * 255) // max(count - 1, 1)
    return frames


def check_imageio_write(ctx: dict) -> dict:
    imageio = need("imageio")
    need("imageio_ffmpeg")
    frames, path, errors = test_frames(ctx["frames"], ctx["size"]), ctx["video"], []
    for codec in ("libx264", "mpeg4"):
        try:
            imageio.mimwrite(path, list(frames), fps=8, codec=codec, macro_block_size=1)
            return {"codec": codec, "bytes": os.path.getsize(path), "fallback_errors": errors}
        except Exception as exc:
            errors.append(f"{codec}: {type(exc).__name__}: {str(exc)[:200]}")
    raise RuntimeError("imageio could not write an MP4: " + " | ".join(errors))


def expect_video(ctx: dict, count: int, height: int, width: int) -> dict:
    want = (ctx["frames"], ctx["size"], ctx["size"])
    if (count, height, width) != want:
        raise AssertionError(f"read {count} frames of {height}x{width}, wrote {want}")
    return {"frames": count, "height": height, "width": width}


def check_decord_read(ctx: dict) -> dict:
    decord = need("decord")
    if not os.path.exists(ctx["video"]):
        raise Skip("no MP4 was written (imageio write did not run)")
    reader = decord.VideoReader(ctx["video"])
    height, width, _ = reader[0].asnumpy().shape
    return expect_video(ctx, len(reader), height, width)


def check_av_read(ctx: dict) -> dict:
    av = need("av")
    if not os.path.exists(ctx["video"]):
        raise Skip("no MP4 was written (imageio write did not run)")
    with av.open(ctx["video"]) as container:
        frames = list(container.decode(video=0))
    return expect_video(ctx, len(frames), frames[0].height, frames[0].width)


def tone(numpy, rate: int):
    return 0.5 * numpy.sin(2 * numpy.pi * 440 * numpy.arange(rate) / rate)


def check_soundfile_roundtrip(ctx: dict) -> dict:
    soundfile, numpy = need("soundfile"), need("numpy")
    soundfile.write(ctx["audio"], tone(numpy, 16000).astype(numpy.float32), 16000, subtype="PCM_16")
    data, rate = soundfile.read(ctx["audio"])
    if (len(data), rate) != (16000, 16000):
        raise AssertionError(f"read {len(data)} samples at {rate} Hz, wrote 16000 at 16000 Hz")
    return {"samples": len(data), "rate": rate}


def write_wav_stdlib(path: str) -> None:
    """A 1 s 440 Hz 16 kHz WAV for librosa when soundfile is absent or broken."""
    import math
    import struct

    samples = (int(16000 * math.sin(2 * math.pi * 440 * i / 16000)) for i in range(16000))
    with wave.open(path, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"".join(struct.pack("<h", s) for s in samples))


def check_librosa(ctx: dict) -> dict:
    librosa = need("librosa")
    if not os.path.exists(ctx["audio"]):
        write_wav_stdlib(ctx["audio"])
    y, rate = librosa.load(ctx["audio"], sr=None)
    resampled = librosa.resample(y, orig_sr=rate, target_sr=22050)
    if (len(y), rate) != (16000, 16000) or abs(len(resampled) - 22050) > 1:
        raise AssertionError(f"loaded {len(y)} @ {rate} Hz, resampled to {len(resampled)} samples")
    return {"samples": len(y), "rate": rate, "resampled": len(resampled)}


# (name, library that must be importable, check); order matters: readers use the writers' files.
VIDEO_CHECKS = (
    ("ffmpeg", "ffmpeg", check_ffmpeg),
    ("imageio_write", "imageio", check_imageio_write),
    ("decord_read", "decord", check_decord_read),
    ("av_read", "av", check_av_read),
)
AUDIO_CHECKS = (
    ("soundfile_roundtrip", "soundfile", check_soundfile_roundtrip),
    ("librosa_load_resample", "librosa", check_librosa),
)
CHECKS = VIDEO_CHECKS + AUDIO_CHECKS


def run_check(check, ctx: dict) -> dict:
    start = time.monotonic()
    try:
        return {"status": "pass", **check(ctx), "seconds": round(time.monotonic() - start, 3)}
    except Skip as why:
        return {"status": "skipped", "reason": str(why)}
    except Exception as exc:
        tail = traceback.format_exc()[-600:]
        return {"status": "fail", "reason": f"{type(exc).__name__}: {exc}"[:300], "evidence": tail}


def verdict(details: dict, require: list[str]) -> dict:
    library = {name: lib for name, lib, _ in CHECKS}
    failed = [f"{n}: {d['reason']}" for n, d in details.items() if d["status"] == "fail"]
    failed += [
        f"{n}: {d['reason']} (required)"
        for n, d in details.items()
        if d["status"] == "skipped" and library[n] in require
    ]
    if failed:
        evidence = "\n".join(d["evidence"] for d in details.values() if "evidence" in d)
        return result("fail", "; ".join(failed), details, evidence)
    ran = [n for n, d in details.items() if d["status"] == "pass"]
    if not ran:
        return result("skipped", "no media library is installed", details)
    return result("pass", f"{len(ran)} media checks passed: {', '.join(ran)}", details)


def run(opts: dict) -> dict:
    require = [{"pyav": "av", "imageio-ffmpeg": "ffmpeg"}.get(r, r) for r in opts["require"]]
    with tempfile.TemporaryDirectory(prefix="probe-media-") as tmp:
        ctx = {
            "video": os.path.join(tmp, "clip.mp4"),
            "audio": os.path.join(tmp, "tone.wav"),
            "frames": int(opts["frames"]),
            "size": int(opts["size"]),
            "timeout": float(opts["timeout"]),
        }
        if opts["jit_cache"] and "NUMBA_CACHE_DIR" not in os.environ:
            os.environ["NUMBA_CACHE_DIR"] = str(opts["jit_cache"])  # read when numba is imported
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            chains = [pool.submit(run_chain, chain, ctx) for chain in (VIDEO_CHECKS, AUDIO_CHECKS)]
            found = {name: res for chain in chains for name, res in chain.result().items()}
    details = {name: found[name] for name, _, _ in CHECKS}
    return verdict(details, require)


def run_chain(checks, ctx: dict) -> dict:
    """Run checks in order (a reader after its writer); {name: its result}."""
    return {name: run_check(check, ctx) for name, _, check in checks}


if __name__ == "__main__":
    runner.main(PROBE, DEFAULTS, run)
