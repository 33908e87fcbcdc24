"""Probe: a tiny random-weight Wan generation runs end to end, offline, and decodes back.

Run inside the image as ``python -I validate/generate.py OPTIONS_JSON`` (see ``_runner.py``:
options, output, exit codes). Standard library only.

Every model is built from a config with random weights (the tiny configs of diffusers' own
Wan tests), prompt embeddings are passed directly so no tokenizer or text encoder is needed,
the Hugging Face libraries are switched offline and every internet socket is refused, so a pass
proves that the image can generate without downloading anything. Variants:

- ``wan2.1``: WanPipeline, one transformer, UniPC flow scheduler, 16x16, 9 frames.
- ``wan2.2-a14b``: the same with two experts (``transformer_2`` and ``boundary_ratio``).
- ``wan2.2-ti2v-5b``: 48-channel VAE (z_dim=48, patch_size=2) and ``expand_timesteps``, 32x32.
- ``i2v``: WanImageToVideoPipeline from a 16x16 image, with a tiny CLIP vision encoder.
- ``multitalk-audio``: a tiny random Wav2Vec2Model on a synthetic 1 s waveform.

A variant the installed libraries do not support (class missing, constructor rejecting an
argument) is skipped with the library's own message, or fails when ``required_variants`` names
it. On a GPU the transformers run in bf16 (fp16 without bf16 support); on CPU in fp32.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import socket
import tempfile
import time
import traceback
from pathlib import Path

PROBE = "generate"
DEFAULTS = {
    "variants": ["wan2.1"],
    "required_variants": [],
    "steps": 2,
    "frames": 9,
    "seed": 0,
    "device": "auto",
    "export": True,
}
# The shared runner (options, output, exit codes), by path: never put validate/ on sys.path.
_RUNNER = importlib.util.spec_from_file_location("_runner", Path(__file__).with_name("_runner.py"))
runner = importlib.util.module_from_spec(_RUNNER)
_RUNNER.loader.exec_module(runner)
result = runner.results_for(PROBE)

OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}
# From diffusers' tests/pipelines/wan: the smallest shapes its fast tests run.
TRANSFORMER = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 2,
    "attention_head_dim": 12,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 32,
    "freq_dim": 256,
    "ffn_dim": 32,
    "num_layers": 2,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "rope_max_seq_len": 32,
}
VAE = {"base_dim": 3, "z_dim": 16, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1}
VAE_48 = {
    "z_dim": 48,
    "in_channels": 12,
    "out_channels": 12,
    "is_residual": True,
    "patch_size": 2,
    "latents_mean": [0.0] * 48,
    "latents_std": [1.0] * 48,
    "scale_factor_spatial": 16,
    "scale_factor_temporal": 4,
}


class Unsupported(Exception):
    """The installed libraries lack a class or an argument that the variant needs."""


def need_class(module: str, name: str):
    """A class from a library; Unsupported when the library is absent or lacks it.

    A library that is installed but fails to import is a real failure, not "unsupported".
    """
    if importlib.util.find_spec(module) is None:
        raise Unsupported(f"{module} is not installed")
    try:
        return getattr(importlib.import_module(module), name)
    except AttributeError as exc:
        raise Unsupported(f"{module} has no {name}: {exc}") from exc


def construct(cls, *args, **kwargs):
    """Instantiate; an unknown keyword or a missing backend means the variant is unsupported."""
    torch = importlib.import_module("torch")
    torch.manual_seed(0)  # random weights, but the same ones on every run
    try:
        return cls(*args, **kwargs)
    except ImportError as exc:
        raise Unsupported(f"{cls.__name__}: {exc}") from exc
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        raise Unsupported(str(exc)) from exc


def tiny_transformer(**changes):
    return construct(need_class("diffusers", "WanTransformer3DModel"), **{**TRANSFORMER, **changes})


def tiny_vae(**changes):
    return construct(need_class("diffusers", "AutoencoderKLWan"), **{**VAE, **changes})


def unipc():
    cls = need_class("diffusers", "UniPCMultistepScheduler")
    return construct(cls, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)


def wan_pipeline(**components):
    cls = need_class("diffusers", "WanPipeline")
    return construct(cls, tokenizer=None, text_encoder=None, scheduler=unipc(), **components)


def variant_wan21(env: dict) -> dict:
    pipe = wan_pipeline(vae=tiny_vae(), transformer=tiny_transformer())
    return generate(env, pipe, height=16, width=16)


def variant_wan22_a14b(env: dict) -> dict:
    experts = {"transformer": tiny_transformer(), "transformer_2": tiny_transformer()}
    pipe = wan_pipeline(vae=tiny_vae(), boundary_ratio=0.875, **experts)
    report = generate(env, pipe, height=16, width=16, guidance_scale_2=3.0)
    if 0 in report["transformer_calls"].values():
        report["warnings"] = [f"an expert never ran: {report['transformer_calls']}"]
    return report


def variant_ti2v_5b(env: dict) -> dict:
    transformer = tiny_transformer(in_channels=48, out_channels=48)
    pipe = wan_pipeline(vae=tiny_vae(**VAE_48), transformer=transformer, expand_timesteps=True)
    return generate(env, pipe, height=32, width=32)


def variant_i2v(env: dict) -> dict:
    config = construct(
        need_class("transformers", "CLIPVisionConfig"),
        hidden_size=4,
        projection_dim=4,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        intermediate_size=16,
        patch_size=1,
    )
    pipe = construct(
        need_class("diffusers", "WanImageToVideoPipeline"),
        tokenizer=None,
        text_encoder=None,
        vae=tiny_vae(),
        scheduler=construct(need_class("diffusers", "FlowMatchEulerDiscreteScheduler"), shift=7.0),
        image_processor=construct(
            need_class("transformers", "CLIPImageProcessor"), crop_size=32, size=32
        ),
        image_encoder=construct(need_class("transformers", "CLIPVisionModel"), config),
        transformer=tiny_transformer(in_channels=36, image_dim=4),
    )
    image = need_class("PIL.Image", "new")("RGB", (16, 16), (200, 120, 40))
    return generate(env, pipe, image=image, height=16, width=16)


def variant_multitalk_audio(env: dict) -> dict:
    """MultiTalk's audio branch: Wav2Vec2 features of a 1 s 16 kHz waveform."""
    torch, numpy = env["torch"], importlib.import_module("numpy")
    config = construct(
        need_class("transformers", "Wav2Vec2Config"),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    model = construct(need_class("transformers", "Wav2Vec2Model"), config).eval()
    model.to(env["device"], env["dtype"])
    extractor = construct(
        need_class("transformers", "Wav2Vec2FeatureExtractor"), sampling_rate=16000
    )
    wave = (0.5 * numpy.sin(2 * numpy.pi * 440 * numpy.arange(16000) / 16000)).astype(numpy.float32)
    values = extractor(wave, sampling_rate=16000, return_tensors="pt").input_values
    start = time.perf_counter()
    with torch.no_grad():
        out = model(values.to(env["device"], env["dtype"]), output_hidden_states=True)
    seconds = round(time.perf_counter() - start, 4)
    length = int(model._get_feat_extract_output_lengths(16000))
    got, want = (tuple(out.last_hidden_state.shape), len(out.hidden_states)), ((1, length, 32), 3)
    if got != want:
        raise AssertionError(f"(last hidden shape, hidden states) {got}, want {want}")
    if not bool(torch.isfinite(out.last_hidden_state).all()):
        raise AssertionError("Wav2Vec2 hidden states are not finite")
    return {
        "hidden_shape": list(want[0]),
        "hidden_states": len(out.hidden_states),
        "seconds": seconds,
    }


VARIANTS = {
    "wan2.1": variant_wan21,
    "wan2.2-a14b": variant_wan22_a14b,
    "wan2.2-ti2v-5b": variant_ti2v_5b,
    "i2v": variant_i2v,
    "multitalk-audio": variant_multitalk_audio,
}


def place(pipe, env: dict) -> None:
    """Transformers in the run dtype; VAE and image encoder in fp32, as Wan's model cards do."""
    torch = env["torch"]
    pipe.set_progress_bar_config(disable=True)
    for name, component in pipe.components.items():
        if isinstance(component, torch.nn.Module):
            dtype = env["dtype"] if name.startswith("transformer") else torch.float32
            component.to(env["device"], dtype)


def count_calls(pipe) -> dict:
    """Forward calls per expert, filled in while the pipeline runs."""
    counts = {}
    for name in ("transformer", "transformer_2"):
        module = getattr(pipe, name, None)
        if module is not None:
            counts[name] = 0
            module.register_forward_hook(lambda *_, n=name: counts.__setitem__(n, counts[n] + 1))
    return counts


def timed_call(env: dict, pipe, **call) -> tuple:
    """(frames, total seconds, per-step seconds) of one pipeline call."""
    torch, stamps = env["torch"], []

    def on_step_end(pipeline, step, timestep, tensors):
        if env["device"] == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        return tensors

    embeds = torch.randn(2, 16, 32, generator=torch.Generator().manual_seed(env["seed"]))
    embeds = embeds.to(env["device"], env["dtype"])
    start = time.perf_counter()
    out = pipe(
        prompt_embeds=embeds[:1],
        negative_prompt_embeds=embeds[1:],
        num_frames=env["frames"],
        num_inference_steps=env["steps"],
        guidance_scale=5.0,
        generator=torch.Generator().manual_seed(env["seed"]),
        output_type="np",
        callback_on_step_end=on_step_end,
        **call,
    )
    steps = [b - a for a, b in zip([start, *stamps], stamps, strict=False)]
    return out.frames[0], time.perf_counter() - start, steps


def generate(env: dict, pipe, **call) -> dict:
    numpy = importlib.import_module("numpy")
    place(pipe, env)
    calls = count_calls(pipe)
    frames, seconds, steps = timed_call(env, pipe, **call)
    want = (env["frames"], call["height"], call["width"], 3)
    if tuple(frames.shape) != want:
        raise AssertionError(f"frames shape {tuple(frames.shape)}, want {want}")
    if not numpy.isfinite(frames).all():
        raise AssertionError("generated frames are not finite")
    timed = steps[1:] or steps  # the first step also pays for set-up and warm-up
    return {
        "frames_shape": list(frames.shape),
        "seconds": round(seconds, 4),
        "seconds_per_step": round(sum(timed) / len(timed), 4),
        "step_seconds": [round(s, 4) for s in steps],
        "transformer_calls": calls,
        "video": export_and_decode(frames, env),
    }


def decode(path: str) -> tuple[str, int, tuple[int, int]]:
    """(reader, frame count, (height, width)) of an MP4, with decord, else imageio."""
    if importlib.util.find_spec("decord"):
        reader = importlib.import_module("decord").VideoReader(path)
        return "decord", len(reader), tuple(reader[0].asnumpy().shape[:2])
    frames = importlib.import_module("imageio").v2.mimread(path)
    return "imageio", len(frames), tuple(frames[0].shape[:2])


def export_and_decode(frames, env: dict) -> dict:
    """Write the frames as MP4 with diffusers' exporter (what apps call) and read them back."""
    if not env["export"]:
        return {"status": "skipped", "reason": "option export is false"}
    if not any(importlib.util.find_spec(m) for m in ("imageio_ffmpeg", "cv2")):
        return {"status": "skipped", "reason": "no MP4 writer (imageio-ffmpeg or opencv)"}
    path = os.path.join(env["tmp"], f"{len(os.listdir(env['tmp']))}.mp4")
    try:
        importlib.import_module("diffusers.utils").export_to_video(list(frames), path, fps=8)
        reader, count, size = decode(path)
    except Exception as exc:
        return {"status": "fail", "reason": f"{type(exc).__name__}: {exc}"[:300]}
    if (count, *size) != tuple(frames.shape[:3]):
        reason = f"MP4 decoded to {count} frames of {size}, wrote {frames.shape[:3]}"
        return {"status": "fail", "reason": reason}
    return {"status": "pass", "reader": reader, "frames": count, "bytes": os.path.getsize(path)}


def run_variant(name: str, env: dict, required: bool) -> dict:
    start = time.perf_counter()
    try:
        report = {"status": "pass", "reason": "", **VARIANTS[name](env)}
        if report.get("video", {}).get("status") == "fail":
            report.update(status="fail", reason=f"MP4 export/decode: {report['video']['reason']}")
    except Unsupported as exc:
        status = "fail" if required else "skipped"
        report = {"status": status, "reason": f"not supported here: {exc}"}
    except Exception as exc:
        tail = traceback.format_exc()[-1500:]
        report = {
            "status": "fail",
            "reason": f"{type(exc).__name__}: {exc}"[:300],
            "evidence": tail,
        }
    report.update(device=env["device"], dtype=str(env["dtype"]).replace("torch.", ""))
    report["wall_seconds"] = round(time.perf_counter() - start, 3)
    return report


def refuse_internet(attempts: list) -> None:
    """Make every IPv4/IPv6 connect fail and remember it, so a download cannot pass unseen."""
    original = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(str(address))
            raise OSError(f"the generate probe refuses network access (to {address})")
        return original(self, address)

    socket.socket.connect = connect


def make_env(opts: dict, tmp: str) -> dict:
    torch = importlib.import_module("torch")
    cuda = opts["device"] == "cuda" or (opts["device"] == "auto" and torch.cuda.is_available())
    dtype = torch.float32
    if cuda:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    env = {"torch": torch, "device": "cuda" if cuda else "cpu", "dtype": dtype, "tmp": tmp}
    env.update(steps=int(opts["steps"]), frames=int(opts["frames"]), seed=int(opts["seed"]))
    env["export"] = bool(opts["export"])
    return env


def verdict(variants: dict, attempts: list) -> dict:
    details = {"variants": variants, "network_attempts": attempts}
    warnings = [w for v in variants.values() for w in v.pop("warnings", [])]
    evidence = "\n".join(v.pop("evidence") for v in variants.values() if "evidence" in v)
    failed = [f"{n}: {v['reason']}" for n, v in variants.items() if v["status"] == "fail"]
    passed = [n for n, v in variants.items() if v["status"] == "pass"]
    skipped = [f"{n} ({v['reason']})" for n, v in variants.items() if v["status"] == "skipped"]
    if failed:
        return result("fail", "; ".join(failed), details, evidence, warnings)
    if not passed:
        return result("skipped", "; ".join(skipped), details, "", warnings)
    reason = f"generated: {', '.join(passed)}" + (
        f"; skipped: {'; '.join(skipped)}" if skipped else ""
    )
    return result("pass", reason, details, "", warnings)


def run(opts: dict) -> dict:
    os.environ.update(OFFLINE)  # before the Hugging Face libraries are imported
    attempts: list = []
    refuse_internet(attempts)
    required = list(opts["required_variants"])
    names = list(dict.fromkeys([*opts["variants"], *required]))  # a required variant always runs
    unknown = sorted(set(names) - VARIANTS.keys())
    if unknown:
        return result("error", f"unknown variants {unknown}; known: {sorted(VARIANTS)}")
    if importlib.util.find_spec("torch") is None:
        why = "not supported here: torch is not installed"
        status = {v: "fail" if v in required else "skipped" for v in names}
        return verdict({v: {"status": status[v], "reason": why} for v in names}, attempts)
    with tempfile.TemporaryDirectory(prefix="probe-generate-") as tmp:
        env = make_env(opts, tmp)
        variants = {v: run_variant(v, env, v in required) for v in names}
    return verdict(variants, attempts)


if __name__ == "__main__":
    runner.main(PROBE, DEFAULTS, run)
