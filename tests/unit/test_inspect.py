"""`builder inspect` and the model-dir probe: layouts, experts, findings, memory from headers."""

from __future__ import annotations

import ast
import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from builder.cli import main
from builder.modeldir import load_probe, render_text
from builder.resources import data_dir
from tests.conftest import FIXTURES, copy_fixture, run_cli

PROBE_FILE = data_dir("validate") / "model_dir.py"
probe = load_probe("model_dir")
DTYPE_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "I8": 1}
Tensors = dict[str, tuple[str, list[int]]]


def write_safetensors(path: Path, tensors: Tensors) -> None:
    """A real .safetensors file: 8-byte little-endian header length, JSON header, zero data."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        size = math.prod(shape) * DTYPE_BYTES[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + bytes(offset))


def expected(*groups: Tensors) -> tuple[int, int]:
    """(parameters, bytes) computed from the tensor specs, independently of the probe."""
    specs = [spec for group in groups for spec in group.values()]
    params = sum(math.prod(shape) for _, shape in specs)
    return params, sum(math.prod(shape) * DTYPE_BYTES[dtype] for dtype, shape in specs)


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


SHARD_1: Tensors = {"blocks.0.attn.weight": ("BF16", [64, 64]), "blocks.0.norm": ("F32", [64])}
SHARD_2: Tensors = {"blocks.1.attn.weight": ("BF16", [64, 64]), "head": ("F16", [64, 16])}
TEXT_ENCODER: Tensors = {"shared.weight": ("BF16", [128, 32])}
VAE: Tensors = {"decoder.conv.weight": ("F32", [16, 16, 3, 3]), "quant.scale": ("I8", [7])}


def write_sharded(directory: Path, prefix: str = "diffusion_pytorch_model") -> None:
    weight_map = {}
    for number, shard in enumerate((SHARD_1, SHARD_2), 1):
        name = f"{prefix}-0000{number}-of-00002.safetensors"
        write_safetensors(directory / name, shard)
        weight_map |= dict.fromkeys(shard, name)
    write_json(directory / f"{prefix}.safetensors.index.json", {"weight_map": weight_map})


def diffusers_model(
    root: Path, pipeline: str = "WanPipeline", experts: int = 1, boundary: float | None = None
) -> Path:
    second = ["diffusers", "WanTransformer3DModel"] if experts == 2 else [None, None]
    index: dict[str, Any] = {
        "_class_name": pipeline,
        "_diffusers_version": "0.35.0",
        "scheduler": ["diffusers", "UniPCMultistepScheduler"],
        "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", "T5TokenizerFast"],
        "transformer": ["diffusers", "WanTransformer3DModel"],
        "transformer_2": second,
        "vae": ["diffusers", "AutoencoderKLWan"],
    }
    if boundary is not None:
        index["boundary_ratio"] = boundary
    write_json(root / "model_index.json", index)
    write_json(root / "scheduler" / "scheduler_config.json", {})
    write_json(root / "tokenizer" / "tokenizer_config.json", {})
    write_json(root / "text_encoder" / "config.json", {})
    write_safetensors(root / "text_encoder" / "model.safetensors", TEXT_ENCODER)
    write_json(root / "vae" / "config.json", {"z_dim": 16})
    write_safetensors(root / "vae" / "diffusion_pytorch_model.safetensors", VAE)
    for name in ("transformer", "transformer_2")[:experts]:
        write_json(root / name / "config.json", {})
        write_sharded(root / name)
    return root


def native_model(
    root: Path, experts: int = 2, model_type: str = "t2v", vae: str = "Wan2.1_VAE.pth"
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / vae).write_bytes(bytes(1024))
    (root / "models_t5_umt5-xxl-enc-bf16.pth").write_bytes(bytes(2048))
    write_json(root / "google" / "umt5-xxl" / "tokenizer_config.json", {})
    for name in ("high_noise_model", "low_noise_model") if experts == 2 else ():
        write_json(root / name / "config.json", {"model_type": model_type})
        write_sharded(root / name)
    if experts == 1:
        write_json(root / "config.json", {"model_type": model_type})
        write_sharded(root)
    return root


def details(root: Path, min_gpu_memory_gb: float | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = probe.run(
        {"model_dir": str(root), "min_gpu_memory_gb": min_gpu_memory_gb}
    )
    return answer


def component(answer: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in answer["details"]["components"] if c["name"] == name)
    return found


def run_probe(tmp_path: Path, options: object) -> tuple[int, dict[str, Any]]:
    options_file = tmp_path / "options.json"
    options_file.write_text(json.dumps(options))
    command = [sys.executable, "-I", str(PROBE_FILE), str(options_file)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, check=False)
    return done.returncode, json.loads(done.stdout.splitlines()[-1])


# --- layouts and profiles ----------------------------------------------------------------------


def test_a_diffusers_wan2_1_model_is_one_expert_of_wanpipeline(tmp_path: Path) -> None:
    answer = details(diffusers_model(tmp_path))
    found = answer["details"]
    assert (found["layout"], found["pipeline"], found["profile"]) == (
        "diffusers",
        "WanPipeline",
        "wan2.1",
    )
    assert (found["experts"], found["boundary_ratio"], found["findings"]) == (1, None, [])
    assert answer["status"] == "pass"


def test_a_diffusers_wan2_2_model_has_two_experts_and_a_boundary_ratio(tmp_path: Path) -> None:
    model = diffusers_model(tmp_path, "WanImageToVideoPipeline", experts=2, boundary=0.9)
    found = details(model)["details"]
    assert (found["pipeline"], found["profile"]) == ("WanImageToVideoPipeline", "wan2.2")
    assert (found["experts"], found["boundary_ratio"]) == (2, 0.9)
    assert [c["name"] for c in found["components"]] == [
        "text_encoder",
        "transformer",
        "transformer_2",
        "vae",
    ]


def test_a_pipeline_that_is_not_wan_has_an_unknown_profile(tmp_path: Path) -> None:
    found = details(diffusers_model(tmp_path, "StableDiffusionPipeline"))["details"]
    assert (found["pipeline"], found["profile"]) == ("StableDiffusionPipeline", "unknown")


def test_a_native_two_expert_model_is_wan2_2(tmp_path: Path) -> None:
    found = details(native_model(tmp_path))["details"]
    assert (found["layout"], found["pipeline"], found["profile"]) == (
        "wan-native",
        "wan.WanT2V",
        "wan2.2",
    )
    assert found["experts"] == 2
    assert [c["name"] for c in found["components"]] == [
        "high_noise_model",
        "low_noise_model",
        "Wan2.1_VAE",
        "models_t5_umt5-xxl-enc-bf16",
    ]
    assert found["findings"] == []


@pytest.mark.parametrize(
    ("model_type", "vae", "extra", "pipeline", "profile"),
    [
        ("t2v", "Wan2.1_VAE.pth", None, "wan.WanT2V", "wan2.1"),
        ("ti2v", "Wan2.2_VAE.pth", None, "wan.WanTI2V", "wan2.2"),
        ("s2v", "Wan2.1_VAE.pth", None, "wan.WanS2V", "wan2.2-s2v"),
        ("animate", "Wan2.1_VAE.pth", None, "wan.WanAnimate", "wan2.2-animate"),
        ("i2v", "Wan2.1_VAE.pth", "multitalk.safetensors", "wan.MultiTalkPipeline", "multitalk"),
        ("", "Wan2.1_VAE.pth", "pytorch_model.bin", "unknown", "wan2.1"),
    ],
)
def test_a_native_single_expert_model_gets_its_pipeline_and_profile(
    tmp_path: Path, model_type: str, vae: str, extra: str | None, pipeline: str, profile: str
) -> None:
    model = native_model(tmp_path, experts=1, model_type=model_type, vae=vae)
    if extra:
        write_safetensors(model / extra, TEXT_ENCODER)
    found = details(model)["details"]
    assert (found["pipeline"], found["profile"], found["experts"]) == (pipeline, profile, 1)


def test_a_directory_with_no_known_files_fails_as_an_unknown_layout(tmp_path: Path) -> None:
    answer = details(tmp_path)
    assert (answer["status"], answer["details"]["layout"]) == ("fail", "unknown")


# --- findings ----------------------------------------------------------------------------------


def test_a_component_listed_but_missing_is_a_finding_with_its_path(tmp_path: Path) -> None:
    model = diffusers_model(tmp_path, experts=2, boundary=0.9)
    for path in sorted((model / "transformer_2").iterdir()):
        path.unlink()
    (model / "transformer_2").rmdir()
    answer = details(model)
    assert answer["details"]["findings"] == [
        {
            "level": "error",
            "path": "transformer_2/",
            "message": "listed in model_index.json but missing",
        }
    ]
    assert answer["status"] == "fail"
    assert (
        answer["reason"]
        == "1 problem(s); first: transformer_2/: listed in model_index.json but missing"
    )


def test_a_boundary_ratio_without_a_second_expert_is_a_finding(tmp_path: Path) -> None:
    answer = details(diffusers_model(tmp_path, experts=1, boundary=0.875))
    assert [f["path"] for f in answer["details"]["findings"]] == ["model_index.json"]


def test_a_directory_not_in_model_index_is_an_unexpected_warning(tmp_path: Path) -> None:
    model = diffusers_model(tmp_path)
    (model / "extras").mkdir()
    answer = details(model)
    assert answer["details"]["findings"] == [
        {"level": "warning", "path": "extras/", "message": "not listed in model_index.json"}
    ]
    assert answer["status"] == "pass"


def test_a_missing_shard_is_a_finding_and_the_rest_is_still_counted(tmp_path: Path) -> None:
    model = diffusers_model(tmp_path)
    (model / "transformer" / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    answer = details(model)
    assert [f["path"] for f in answer["details"]["findings"]] == [
        "transformer/diffusion_pytorch_model-00002-of-00002.safetensors"
    ]
    assert component(answer, "transformer")["params"] == expected(SHARD_1)[0]


def test_a_model_component_without_weights_is_a_finding(tmp_path: Path) -> None:
    model = diffusers_model(tmp_path)
    (model / "text_encoder" / "model.safetensors").unlink()
    findings = details(model)["details"]["findings"]
    assert findings == [
        {
            "level": "error",
            "path": "text_encoder/",
            "message": "has config.json but no weight files",
        }
    ]


def test_a_corrupt_safetensors_header_is_a_finding_not_a_crash(tmp_path: Path) -> None:
    model = diffusers_model(tmp_path)
    (model / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"\xff" * 16)
    [finding] = details(model)["details"]["findings"]
    assert finding["path"] == "vae/diffusion_pytorch_model.safetensors"
    assert finding["message"].startswith("unreadable weights: header length")


def test_a_native_model_missing_an_expert_the_vae_and_t5_has_three_findings(tmp_path: Path) -> None:
    model = native_model(tmp_path)
    for path in [*sorted((model / "low_noise_model").iterdir()), model / "Wan2.1_VAE.pth"]:
        path.unlink()
    (model / "low_noise_model").rmdir()
    (model / "models_t5_umt5-xxl-enc-bf16.pth").unlink()
    assert [f["path"] for f in details(model)["details"]["findings"]] == [
        "Wan2.2_VAE.pth or Wan2.1_VAE.pth",
        "models_t5_umt5-xxl-enc-bf16.pth",
        "low_noise_model/",
    ]


def test_an_unexpected_weight_file_at_the_top_of_a_native_model_is_a_warning(
    tmp_path: Path,
) -> None:
    model = native_model(tmp_path, experts=1)
    (model / "pytorch_model.bin").write_bytes(bytes(64))
    findings = details(model)["details"]["findings"]
    assert findings == [
        {
            "level": "warning",
            "path": "pytorch_model.bin",
            "message": "unexpected weight file at the top",
        }
    ]


# --- memory ------------------------------------------------------------------------------------


def test_the_memory_estimate_equals_the_sum_of_the_safetensors_headers(tmp_path: Path) -> None:
    answer = details(diffusers_model(tmp_path, experts=2, boundary=0.9))
    for name, groups in [
        ("transformer", (SHARD_1, SHARD_2)),
        ("transformer_2", (SHARD_1, SHARD_2)),
        ("text_encoder", (TEXT_ENCODER,)),
        ("vae", (VAE,)),
    ]:
        found = component(answer, name)
        params, stored = expected(*groups)
        assert (found["params"], found["stored_bytes"], found["estimate"]) == (
            params,
            stored,
            "header",
        )
        assert found["bytes"] == {"bf16": 2 * params, "fp16": 2 * params, "fp32": 4 * params}
    params, stored = expected(SHARD_1, SHARD_2, SHARD_1, SHARD_2, TEXT_ENCODER, VAE)
    total = answer["details"]["total"]
    assert (total["params"], total["stored_bytes"]) == (params, stored)
    assert answer["details"]["memory"]["need_bf16_bytes"] == 2 * params


def test_a_variant_next_to_the_plain_weights_is_not_counted_twice(tmp_path: Path) -> None:
    model = diffusers_model(tmp_path)
    write_safetensors(model / "vae" / "diffusion_pytorch_model.fp16.safetensors", VAE)
    assert component(details(model), "vae")["params"] == expected(VAE)[0]


def test_pickled_checkpoints_are_estimated_from_file_size(tmp_path: Path) -> None:
    answer = details(native_model(tmp_path))
    vae, t5 = component(answer, "Wan2.1_VAE"), component(answer, "models_t5_umt5-xxl-enc-bf16")
    assert (vae["params"], vae["stored_bytes"], vae["estimate"]) == (256, 1024, "file size")
    assert (t5["params"], t5["estimate"]) == (1024, "file size")  # bf16 in the name: 2 bytes each
    assert answer["details"]["total"]["estimate"] == "file size"


def test_weights_larger_than_the_given_gpu_memory_fail(tmp_path: Path) -> None:
    model = diffusers_model(tmp_path)
    tiny = details(model, min_gpu_memory_gb=0.00001)
    assert (tiny["status"], tiny["details"]["memory"]["fits_min_gpu_memory"]) == ("fail", False)
    assert tiny["reason"] == "bf16 weights need 0.0 GiB, more than the 1e-05 GiB given"
    assert details(model, min_gpu_memory_gb=1)["details"]["memory"]["fits_min_gpu_memory"] is True


def test_free_gpu_memory_from_inside_a_container_is_compared_too(tmp_path: Path) -> None:
    gpu = {"device": "fake", "free_bytes": 10, "total_bytes": 100}
    answer = probe.run({"model_dir": str(diffusers_model(tmp_path))}, gpu)
    assert (answer["status"], answer["details"]["memory"]["fits_free_gpu_memory"]) == (
        "fail",
        False,
    )


# --- the probe contract and the command --------------------------------------------------------


def test_the_probe_prints_one_json_object_as_its_last_line(tmp_path: Path) -> None:
    model = diffusers_model(tmp_path / "model")
    code, answer = run_probe(tmp_path, {"model_dir": str(model), "min_gpu_memory_gb": 24})
    assert code == 0
    assert sorted(answer) == ["details", "evidence", "probe", "reason", "status", "warnings"]
    assert (answer["probe"], answer["status"]) == ("model-dir", "pass")
    assert answer["evidence"].startswith("diffusers layout: pipeline WanPipeline")


@pytest.mark.parametrize(
    ("options", "code", "status"),
    [({}, 0, "skipped"), ({"model_dir": "/no/such/model"}, 2, "error"), ([], 2, "error")],
)
def test_the_probe_answers_skipped_or_error_in_json(
    tmp_path: Path, options: object, code: int, status: str
) -> None:
    assert run_probe(tmp_path, options)[0] == code
    assert run_probe(tmp_path, options)[1]["status"] == status


def test_the_probe_imports_only_the_standard_library_and_torch() -> None:
    tree = ast.parse(PROBE_FILE.read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported - set(sys.stdlib_module_names) == {"torch"}


def test_the_text_report_shows_layout_weights_memory_and_result(tmp_path: Path) -> None:
    answer = details(native_model(tmp_path), min_gpu_memory_gb=24)
    assert render_text(answer).replace(str(tmp_path), "MODEL") == (
        "model dir: MODEL\n"
        "layout: wan-native  pipeline: wan.WanT2V  profile: wan2.2  experts: 2\n"
        "\n"
        "weights:\n"
        "  component                       params  bf16/fp16       fp32  measured from\n"
        "  high_noise_model                 9.28K   18.1 KiB   36.2 KiB  header\n"
        "  low_noise_model                  9.28K   18.1 KiB   36.2 KiB  header\n"
        "  Wan2.1_VAE                         256      512 B    1.0 KiB  file size\n"
        "  models_t5_umt5-xxl-enc-bf16      1.02K    2.0 KiB    4.0 KiB  file size\n"
        "  total                           19.84K   38.8 KiB   77.5 KiB  file size\n"
        "\n"
        "memory: bf16 weights need 38.8 KiB; they fit in 24 GiB\n"
        "\n"
        "result: pass: wan-native layout, wan.WanT2V, profile wan2.2, 2 expert(s), "
        "19,840 parameters, 0.0 GiB in bf16"
    )


def test_the_inspect_command_prints_json_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["inspect", str(diffusers_model(tmp_path)), "--format", "json", "--gpu-memory-gb", "80"]
        )
    assert exit_info.value.code == 0
    assert json.loads(capsys.readouterr().out)["details"]["memory"]["fits_min_gpu_memory"] is True


def test_the_inspect_command_exits_1_when_files_are_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", str(tmp_path)])
    assert exit_info.value.code == 1
    assert "result: fail: no model_index.json" in capsys.readouterr().out


def test_the_inspect_command_exits_2_for_a_missing_directory(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", "/no/such/model"])
    assert exit_info.value.code == 2
    assert "/no/such/model: no such directory" in capsys.readouterr().err


def test_the_probe_is_found_in_the_checkout_next_to_the_package() -> None:
    assert data_dir("validate") == Path(__file__).resolve().parents[2] / "validate"
    assert PROBE_FILE.is_file()


# --- bad model files: a finding naming the file, never a crash, a hang or non-JSON output -------

INSPECT_BAD = FIXTURES / "inspect_bad"
VAE_WEIGHTS = "vae/diffusion_pytorch_model.safetensors"
TRANSFORMER_INDEX = "transformer/diffusion_pytorch_model.safetensors.index.json"


def refuse_constant(name: str) -> None:
    raise AssertionError(f"{name} is not JSON")


def inspect_json(model: Path) -> tuple[int, dict[str, Any]]:
    done = run_cli("inspect", str(model), "--format", "json", timeout=120)
    assert "Traceback" not in done.err, done.err
    answer: dict[str, Any] = json.loads(done.out, parse_constant=refuse_constant)
    return done.code, answer


def errors_of(answer: dict[str, Any]) -> list[tuple[str, str]]:
    findings = answer["details"]["findings"]
    return [(f["path"], f["message"]) for f in findings if f["level"] == "error"]


@pytest.mark.parametrize(
    ("case", "path", "message"),
    [
        ("truncated_index", TRANSFORMER_INDEX, "not valid JSON: Unterminated string"),
        ("list_index", TRANSFORMER_INDEX, "not a JSON object"),
        ("list_model_index", "model_index.json", "not a JSON object"),
        ("infinite_boundary_ratio", "model_index.json", "not valid JSON: Infinity"),
        ("negative_shape", VAE_WEIGHTS, "tensor 'w': shape [-4, 4] is not"),
        ("huge_shape", VAE_WEIGHTS, "tensor 'w': shape [34359738368, 34359738368] has more"),
        ("offsets_past_the_end", VAE_WEIGHTS, "tensor 'w': data_offsets [0, 4096] are not"),
        ("truncated_safetensors", VAE_WEIGHTS, "header length 4096 exceeds the file"),
        ("header_not_json", VAE_WEIGHTS, "header is not valid JSON"),
        ("non_utf8_json", "vae/config.json", "not UTF-8"),
    ],
)
def test_a_bad_model_file_is_an_error_finding_naming_it_and_exit_1(
    case: str, path: str, message: str
) -> None:
    code, answer = inspect_json(INSPECT_BAD / case)
    assert code == 1
    assert any(where == path and message in text for where, text in errors_of(answer)), answer
    assert answer["reason"].startswith(f"{len(errors_of(answer))} problem(s)")


def test_a_fifo_named_like_weights_is_a_finding_not_a_hang(tmp_path: Path) -> None:
    model = copy_fixture("inspect_bad/negative_shape", tmp_path / "model")
    (model / VAE_WEIGHTS).unlink()
    os.mkfifo(model / VAE_WEIGHTS)
    code, answer = inspect_json(model)
    assert (code, errors_of(answer)) == (
        1,
        [(VAE_WEIGHTS, "unreadable weights: not a regular file")],
    )


def test_a_fifo_named_like_a_config_is_a_finding_not_a_hang(tmp_path: Path) -> None:
    model = copy_fixture("inspect_bad/negative_shape", tmp_path / "model")
    write_safetensors(model / VAE_WEIGHTS, VAE)
    (model / "vae" / "config.json").unlink()
    os.mkfifo(model / "vae" / "config.json")
    code, answer = inspect_json(model)
    assert (code, errors_of(answer)) == (
        1,
        [("vae/config.json", "unreadable: not a regular file")],
    )


def test_an_infinite_gpu_memory_is_exit_2_naming_the_option(tmp_path: Path) -> None:
    done = run_cli("inspect", str(diffusers_model(tmp_path)), "--gpu-memory-gb", "inf")
    assert done.code == 2
    assert "--gpu-memory-gb inf: not a finite number" in done.err
    assert "Traceback" not in done.err


def test_the_probe_refuses_a_non_finite_gpu_memory_in_its_options(tmp_path: Path) -> None:
    model = diffusers_model(tmp_path / "model")
    code, answer = run_probe(tmp_path, {"model_dir": str(model), "min_gpu_memory_gb": math.inf})
    assert (code, answer["status"]) == (2, "error")
    assert answer["reason"] == "min_gpu_memory_gb: not a finite positive number: inf"
