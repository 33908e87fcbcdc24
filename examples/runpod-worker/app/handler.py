"""A RunPod serverless worker that generates a short video with a tiny random-weight Wan model.

The pipeline is built once, when the worker starts: diffusers' WanPipeline from the smallest
configs of diffusers' own Wan tests (2 layers, 16x16), random weights, no download, no text
encoder or tokenizer. Each job turns its input into seeded random `prompt_embeds`, generates 9
frames and returns their shape and the MP4, base64-encoded. Bad input returns {"error": ...},
RunPod's convention for a failed job.

    python -u handler.py                                   # a RunPod worker (or test_input.json)
    python -u handler.py --test_input '{"input": {"prompt": "a cat", "seed": 0}}'
"""

from __future__ import annotations

import base64
import os
import tempfile
import time
import zlib

# Offline before the Hugging Face libraries are imported: nothing here downloads.
for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
    os.environ.setdefault(_name, "1")

import runpod  # noqa: E402
import torch  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKLWan,
    UniPCMultistepScheduler,
    WanPipeline,
    WanTransformer3DModel,
)
from diffusers.utils import export_to_video  # noqa: E402

# The tiny configs of validate/generate.py (from diffusers' tests/pipelines/wan).
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
SIZE, FRAMES, TEXT_TOKENS = 16, 9, 16
MAX_STEPS = 10
INPUT_KEYS = {"prompt", "seed", "steps"}


def build_pipeline() -> WanPipeline:
    torch.manual_seed(0)  # random weights, the same ones on every start
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
    )
    pipe = WanPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=AutoencoderKLWan(**VAE),
        transformer=WanTransformer3DModel(**TRANSFORMER),
        scheduler=scheduler,
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def parse(job_input: object) -> tuple[dict, str | None]:
    """The job's (prompt, seed, steps), or an error message for RunPod to report."""
    if not isinstance(job_input, dict):
        return {}, f"input must be an object, got {type(job_input).__name__}"
    unknown = sorted(set(job_input) - INPUT_KEYS)
    if unknown:
        return {}, f"unknown input keys {unknown}; known: {sorted(INPUT_KEYS)}"
    prompt = job_input.get("prompt")
    seed, steps = job_input.get("seed", 0), job_input.get("steps", 2)
    if not isinstance(prompt, str) or not prompt.strip():
        return {}, "input.prompt must be a non-empty string"
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        return {}, "input.seed must be an integer from 0 to 2**32-1"
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MAX_STEPS:
        return {}, f"input.steps must be an integer from 1 to {MAX_STEPS}"
    return {"prompt": prompt, "seed": seed, "steps": steps}, None


def embeddings(prompt: str, seed: int) -> torch.Tensor:
    """Stand-in for a text encoder: random embeddings seeded by the prompt and the seed."""
    generator = torch.Generator().manual_seed(zlib.crc32(prompt.encode()) ^ seed)
    embeds = torch.randn(2, TEXT_TOKENS, TRANSFORMER["text_dim"], generator=generator)
    return embeds.to(PIPE.device)


def mp4_base64(frames) -> str:
    with tempfile.TemporaryDirectory(prefix="worker-") as tmp:
        path = os.path.join(tmp, "out.mp4")
        export_to_video(list(frames), path, fps=8)
        with open(path, "rb") as file:
            return base64.b64encode(file.read()).decode("ascii")


def handler(job: dict) -> dict:
    params, error = parse(job.get("input"))
    if error:
        return {"error": error}
    start = time.perf_counter()
    embeds = embeddings(params["prompt"], params["seed"])
    with torch.no_grad():
        out = PIPE(
            prompt_embeds=embeds[:1],
            negative_prompt_embeds=embeds[1:],
            height=SIZE,
            width=SIZE,
            num_frames=FRAMES,
            num_inference_steps=params["steps"],
            guidance_scale=5.0,
            generator=torch.Generator().manual_seed(params["seed"]),
            output_type="np",
        )
    frames = out.frames[0]
    return {
        "frames": list(frames.shape),
        "seconds": round(time.perf_counter() - start, 3),
        "mp4_base64": mp4_base64(frames),
    }


PIPE = build_pipeline()  # once per worker, before the first job

if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
