"""GPU fleet coverage without a GPU: the matrix's `fleet`, the committed arch table, the check
rule (builder/check/fleet.py) and the cuda probe's readers and verdict (validate/cuda.py)."""

from __future__ import annotations

import copy
import importlib.util
import itertools
import re
import struct
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from packaging.version import Version

from builder.check import Context, load_known_issues
from builder.check.fleet import (
    DRIVER_SOURCE,
    arch_table,
    find_build,
    kernel_for,
    probe_option,
)
from builder.check.metadata import PYPI, IndexCache
from builder.check.rules import rule_fleet
from builder.errors import InputError
from builder.matrix import load_gpu_table, parse_matrix
from builder.report import fleet_line, parse_report, render_html, render_markdown
from tests.conftest import FIXTURES, ROOT

CU121 = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]
FLEET = "[rtx4090, rtx5090, a100, h100, l40s, b200]"


def load_probe() -> ModuleType:
    spec = importlib.util.spec_from_file_location("probe_cuda_fleet", ROOT / "validate" / "cuda.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


probe = load_probe()


def build(torch: str, cuda: str) -> tuple[str, ...]:
    found = find_build(Version(torch), cuda)
    assert found is not None, (torch, cuda)
    return found[0].arch


# ---------------------------------------------------------------- the table and its rule


def test_the_committed_table_holds_the_measured_lists_of_pypis_wheels() -> None:
    rows = {(str(b.torch), b.cuda): b for b in arch_table()}
    assert list(rows[("2.4.1", "cu121")].arch) == CU121
    assert rows[("2.8.0", "cu128")].arch[-2:] == ("sm_100", "sm_120")
    measured = [b for b in arch_table() if b.measured]
    assert {str(b.torch) for b in measured} >= {"2.4.0", "2.4.1", "2.5.1", "2.7.1", "2.11.0"}
    for b in measured:  # measured rows are PyPI's own wheel, named with its sha256
        assert b.pypi_default
        assert re.match(
            rf"torch-{re.escape(str(b.torch))}-cp311-.*x86_64\.whl sha256:[0-9a-f]{{64}}", b.source
        )
    for b in arch_table():
        assert b.source and b.arch and all(re.match(r"^(sm|compute)_\d+$", a) for a in b.arch)


def test_exact_sass_is_a_kernel_image() -> None:
    assert kernel_for((9, 0), build("2.4.1", "cu121")) == ("sass", "sm_90")


def test_same_major_sass_of_a_lower_minor_runs_sm_86_and_sm_89_from_sm_80() -> None:
    assert kernel_for((8, 9), build("2.4.1", "cu121")) == ("compatible", "sm_86")
    assert kernel_for((8, 6), ["sm_80", "sm_90"]) == ("compatible", "sm_80")
    assert kernel_for((10, 3), build("2.11.0", "cu130")) == ("compatible", "sm_100")


def test_ptx_of_a_lower_or_equal_architecture_is_jit_compiled() -> None:
    assert kernel_for((12, 0), [*CU121, "compute_90"]) == ("ptx", "compute_90")
    assert kernel_for((8, 0), ["sm_90", "compute_90"]) == ("none", None)  # PTX never runs older


def test_a_newer_major_without_ptx_has_no_kernel_image() -> None:
    assert kernel_for((12, 0), build("2.4.1", "cu121")) == ("none", None)
    assert kernel_for((7, 0), build("2.11.0", "cu130")) == ("none", None)  # cu130 dropped Volta


def test_arch_specific_entries_are_left_out() -> None:
    assert kernel_for((9, 0), ["sm_80", "sm_90a"]) == ("none", None)


def test_a_cu128_build_of_27_or_later_covers_sm_120() -> None:
    for torch, cuda in (
        ("2.7.0", "cu128"),
        ("2.7.1", "cu128"),
        ("2.8.0", "cu128"),
        ("2.10.0", "cu128"),
    ):
        assert kernel_for((12, 0), build(torch, cuda))[0] == "sass"
    assert kernel_for((12, 0), build("2.7.1", "cu126"))[0] == "none"  # PyPI's 2.7 is cu126


def test_the_probe_applies_the_same_rule_as_check() -> None:
    lists = [list(b.arch) for b in arch_table()]
    lists += [["sm_80", "compute_80"], ["compute_70"], ["sm_90a", "sm_100f"], []]
    capabilities = [(m, n) for m in (5, 6, 7, 8, 9, 10, 11, 12, 13) for n in range(10)]
    for arch, capability in itertools.product(lists, capabilities):
        assert probe.kernel_for(capability, arch) == kernel_for(capability, arch), (
            capability,
            arch,
        )


def test_a_patch_release_without_a_row_takes_its_minors_list_and_says_so() -> None:
    row, note = find_build(Version("2.7.2+cu128"), "cu128") or (None, "")
    assert row is not None and str(row.torch) == "2.7.1" and "same minor" in note


# ---------------------------------------------------------------- the matrix's fleet


def matrix(tmp_path: Path, fleet: str, base_fleet: str = "", torch: str = "2.4.1") -> Any:
    base = f", fleet: {base_fleet}" if base_fleet else ""
    text = (
        "version: 1\nbases:\n"
        f"  b: {{image: img, python: '3.11', cuda: '12.1'{base}}}\n"
        f"  c: {{image: img, python: '3.11', cuda: '12.1'}}\n"
        f"axes:\n  base: [b, c]\n  torch: ['{torch}']\n{fleet}"
    )
    return parse_matrix(text, tmp_path / "matrix.yaml")


def test_fleet_gpus_come_from_the_shipped_table_or_a_raw_sm(tmp_path: Path) -> None:
    cells = matrix(tmp_path, 'fleet: {gpus: [rtx5090, sm_121], driver: "550.54.15"}\n').cells
    fleet = cells[0].fleet
    assert [(g.name, g.sm, g.label) for g in fleet.gpus] == [
        ("rtx5090", "sm_120", "NVIDIA GeForce RTX 5090"),
        ("sm_121", "sm_121", "sm_121"),
    ]
    assert fleet.driver == "550.54.15" and cells[1].fleet == fleet
    assert "developer.nvidia.com/cuda-gpus" in fleet.gpus[0].source


def test_every_table_row_cites_nvidias_list() -> None:
    table = load_gpu_table()
    assert table["rtx4090"].sm == "sm_89" and table["b200"].sm == "sm_100"
    assert all(g.source == "https://developer.nvidia.com/cuda-gpus" for g in table.values())


def test_a_base_narrows_the_fleet(tmp_path: Path) -> None:
    cells = matrix(tmp_path, f"fleet: {{gpus: {FLEET}}}\n", "{gpus: [h100]}").cells
    assert [g.name for g in cells[0].fleet.gpus] == ["h100"]
    assert len(cells[1].fleet.gpus) == 6


@pytest.mark.parametrize(
    ("fleet", "base_fleet", "message"),
    [
        (
            "fleet: {gpus: [rtx5900]}\n",
            "",
            "matrix.yaml:8:16: fleet.gpus[0]: unknown GPU 'rtx5900' (did you mean 'rtx5090'?)",
        ),
        ("fleet: {gpus: [h100, h100]}\n", "", "fleet.gpus[1]: 'h100' is listed twice"),
        ("fleet: {gpus: []}\n", "", "fleet.gpus: a fleet needs at least one GPU"),
        (
            "fleet: {gpus: [h100], driver: latest}\n",
            "",
            "fleet.driver: invalid driver version 'latest'",
        ),
        ("fleet: {gpu: [h100]}\n", "", "fleet.gpu: unknown key (did you mean 'gpus'?)"),
        (
            "fleet: {gpus: [h100]}\n",
            "{gpus: [t4]}",
            "bases.b.fleet.gpus[0]: t4 (sm_75) is not in the matrix's fleet (h100)",
        ),
        (
            'fleet: {gpus: [h100], driver: "550.54.15"}\n',
            '{driver: "535"}',
            "bases.b.fleet.driver: 535 is older than the matrix's fleet.driver 550.54.15",
        ),
    ],
)
def test_a_bad_fleet_is_refused_with_its_line(
    tmp_path: Path, fleet: str, base_fleet: str, message: str
) -> None:
    with pytest.raises(InputError) as caught:
        matrix(tmp_path, fleet, base_fleet)
    assert message in caught.value.message
    assert "matrix.yaml:" in caught.value.message


# ---------------------------------------------------------------- the check rule


def context(tmp_path: Path, torch: str, fleet: str, cuda: str = "12.1") -> Context:
    text = (
        f"version: 1\nbases:\n  b: {{image: img, python: '3.11', cuda: '{cuda}'}}\n"
        f"axes:\n  base: [b]\nfleet: {fleet}\n"
    )
    cell = parse_matrix(text, tmp_path / "matrix.yaml").cells[0]
    return Context(
        cell=cell,
        where="matrix.yaml:5",
        profiles=(),
        versions={"torch": Version(torch)},
        resolved=True,
        pinned={},
        metadata=IndexCache(PYPI, FIXTURES / "index"),  # offline: the recorded files only
        issues=load_known_issues(),
    )


def errors(ctx: Context) -> list[Any]:
    return [f for f in rule_fleet(ctx) if f.severity == "error"]


def test_torch_241_cu121_fails_an_rtx_5090_naming_the_gpu_its_sm_the_list_and_a_fix(
    tmp_path: Path,
) -> None:
    found = errors(context(tmp_path, "2.4.1", f"{{gpus: {FLEET}}}"))
    assert [f.message.split(" with ")[0] for f in found] == [
        "NVIDIA GeForce RTX 5090",
        "NVIDIA B200",  # sm_100: no Blackwell SASS before the CUDA 12.8 builds either
    ]
    finding = found[0]
    assert (finding.code, finding.package) == ("fleet-arch", "torch")
    assert finding.message.startswith(
        "NVIDIA GeForce RTX 5090 with CUDA capability sm_120 is not compatible with torch "
        "2.4.1+cu121, which supports CUDA capabilities sm_50 sm_60 sm_70 sm_75 sm_80 sm_86 sm_90"
    )
    assert "no kernel image is available for execution on the device" in finding.message
    assert finding.hint.startswith("use torch==2.7.0+cu128 (the first build")
    assert "https://download.pytorch.org/whl/cu128" in finding.hint
    assert "or use torch==2.8.0 (PyPI's own build, cu128)" in finding.hint
    assert [c[0].specifier for c in finding.candidates] == ["==2.7.0+cu128", "==2.8.0"]
    assert "torch-2.4.1-cp311-cp311-manylinux1_x86_64.whl sha256:0b5f88af" in finding.source
    assert "developer.nvidia.com/cuda-gpus" in finding.source


def test_the_same_cell_with_only_a100_and_h100_passes(tmp_path: Path) -> None:
    assert list(rule_fleet(context(tmp_path, "2.4.1", "{gpus: [a100, h100]}"))) == []


@pytest.mark.parametrize("torch", ["2.7.0+cu128", "2.7.1+cu128", "2.8.0", "2.11.0", "2.15.0"])
def test_a_cu128_or_newer_build_passes_sm_120(tmp_path: Path, torch: str) -> None:
    ctx = context(tmp_path, torch, "{gpus: [rtx5090, sm_120, rtx4090, h100, b200]}", "13.0")
    assert [(f.code, f.message) for f in rule_fleet(ctx)] == []


def test_a_cuda_13_cell_fails_an_older_fleet_driver_citing_the_rule(tmp_path: Path) -> None:
    ctx = context(tmp_path, "2.11.0", '{gpus: [h100], driver: "550.54.15"}', "13.0")
    found = errors(ctx)
    assert [f.code for f in found] == ["fleet-driver", "fleet-driver"]  # torch's, then the base's
    torch_finding = found[0]
    assert torch_finding.message.startswith(
        "torch 2.11.0+cu130's CUDA runtime is CUDA 13.0, which needs NVIDIA driver >= 580"
    )
    assert "The NVIDIA driver on your system is too old" in torch_finding.message
    assert torch_finding.source == DRIVER_SOURCE
    assert "minor-version-compatibility" in DRIVER_SOURCE
    assert torch_finding.hint.startswith("use torch==2.10.0 (torch 2.10.0+cu128")
    assert found[1].message.startswith("base b's CUDA is CUDA 13.0")


def test_a_cuda_12_cell_runs_on_a_550_driver(tmp_path: Path) -> None:
    ctx = context(tmp_path, "2.8.0", '{gpus: [h100], driver: "550.54.15"}', "12.8")
    assert errors(ctx) == []


def test_ptx_only_is_a_warning_and_an_unknown_build_is_information(tmp_path: Path) -> None:
    unknown = list(rule_fleet(context(tmp_path, "2.5.1+cu118", "{gpus: [h100]}")))
    assert [(f.severity, f.code) for f in unknown] == [("info", "fleet-unknown")]
    cpu = list(rule_fleet(context(tmp_path, "2.4.1+cpu", "{gpus: [h100]}")))
    assert [(f.severity, f.code) for f in cpu] == [("warning", "fleet-cpu-build")]


def test_a_cell_without_a_fleet_has_no_fleet_findings(tmp_path: Path) -> None:
    text = (
        "version: 1\nbases:\n  b: {image: img, python: '3.11', cuda: '12.1'}\naxes:\n  base: [b]\n"
    )
    cell = parse_matrix(text, tmp_path / "matrix.yaml").cells[0]
    assert cell.fleet is None and probe_option(cell) is None


def test_the_probe_option_carries_the_gpus_driver_and_floors(tmp_path: Path) -> None:
    cell = context(tmp_path, "2.4.1", '{gpus: [rtx5090], driver: "550.54.15"}').cell
    option = probe_option(cell)
    assert option is not None
    assert option["gpus"] == [
        {"name": "rtx5090", "sm": "sm_120", "label": "NVIDIA GeForce RTX 5090"}
    ]
    assert option["driver"] == "550.54.15"
    assert {r["cuda_major"]: r["driver"] for r in option["driver_rules"]}[13] == "580"


# ---------------------------------------------------------------- the probe's readers


def fatbin_entry(kind: int, arch: int) -> bytes:
    payload = b"image %d %d" % (kind, arch)
    payload += b"\0" * (-len(payload) % 8)
    header = struct.pack("<HHIQ", kind, 0x0101, 64, len(payload)) + b"\0" * 12
    header += struct.pack("<I", arch)
    return header + b"\0" * (64 - len(header)) + payload


def fatbin(entries: list[tuple[int, int]]) -> bytes:
    body = b"".join(fatbin_entry(kind, arch) for kind, arch in entries)
    return struct.pack("<IHHQ", 0xBA55ED50, 1, 16, len(body)) + body


def elf(sections: Mapping[str, bytes]) -> bytes:
    """A minimal ELF64 little-endian file: a null section, the given ones, .shstrtab."""
    names = b"\0" + b"".join(n.encode() + b"\0" for n in [*sections, ".shstrtab"])
    body, headers, at = b"", [b"\0" * 64], 64
    name_at = 1
    for name, data in [*sections.items(), (".shstrtab", names)]:
        headers.append(
            struct.pack("<IIQQQQIIQQ", name_at, 1, 0, 0, at + len(body), len(data), 0, 0, 8, 0)
        )
        name_at += len(name) + 1
        body += data + b"\0" * (-len(data) % 8)
    table = 64 + len(body)
    ident = b"\x7fELF" + bytes([2, 1, 1]) + b"\0" * 9
    header = struct.pack(
        "<16sHHIQQQIHHHHHH",
        ident,
        3,
        62,
        1,
        0,
        0,
        table,
        0,
        64,
        0,
        0,
        64,
        len(headers),
        len(headers) - 1,
    )
    return header + body + b"".join(headers)


def test_the_fatbin_parser_reads_kind_and_arch_of_every_container(tmp_path: Path) -> None:
    first = fatbin([(2, 80), (2, 90), (1, 90)])
    second = fatbin([(2, 120), (2, 80)])
    padding = b"\0" * 8  # containers sit 8-byte aligned, with padding between them
    library = tmp_path / "flash_attn_cuda.so"
    library.write_bytes(elf({".text": b"\x90" * 24, ".nv_fatbin": first + padding + second}))
    assert probe.fatbin_archs(library) == ["sm_80", "sm_90", "compute_90", "sm_120"]


def test_files_that_are_not_elf_or_hold_no_fatbin_have_no_kernels(tmp_path: Path) -> None:
    plain = tmp_path / "plain.so"
    plain.write_bytes(elf({".text": b"\x90" * 16}))
    text = tmp_path / "text.so"
    text.write_bytes(b"not an ELF file")
    empty = tmp_path / "empty.so"
    empty.write_bytes(b"")
    cut = tmp_path / "cut.so"
    cut.write_bytes(elf({".nv_fatbin": fatbin([(2, 80)])})[:70])
    assert [probe.fatbin_archs(p) for p in (plain, text, empty, cut)] == [[], [], [], []]


def test_the_arch_string_is_found_even_after_an_unterminated_string() -> None:
    data = (
        b"\0c10/cuda/Graphs.h\0\0sm_50 sm_60 sm_90\0\0std::string ipc_hsm_70 sm_120 compute_120\0x"
    )
    assert probe.arch_flags_in_binary(data) == "sm_70 sm_120 compute_120"
    assert probe.arch_flags_in_binary(b"\0nothing here\0") is None


def fake_torch(version: str, cuda: str | None, flags: str | None, root: Path | None = None) -> Any:
    getter = (lambda: flags) if flags is not None else None
    c = SimpleNamespace(_cuda_getArchFlags=getter) if getter else SimpleNamespace()
    return SimpleNamespace(
        __version__=version,
        __file__=str((root or Path("/nonexistent")) / "__init__.py"),
        version=SimpleNamespace(cuda=cuda),
        _C=c,
    )


def fleet_opts(*gpus: tuple[str, str], driver: str | None = None) -> dict[str, Any]:
    rules = [
        {"cuda_major": 12, "driver": "525.60.13", "source": "rule"},
        {"cuda_major": 13, "driver": "580", "source": "rule"},
    ]
    fleet = {
        "gpus": [{"name": n, "sm": sm, "label": n} for n, sm in gpus],
        "driver": driver,
        "driver_rules": rules,
    }
    return {"fleet": fleet, "extensions": False, "gpu": "optional"}


def test_the_probe_judges_the_fleet_without_a_gpu() -> None:
    torch = fake_torch("2.4.1+cu121", "12.1", " ".join(CU121))
    opts = fleet_opts(("rtx4090", "sm_89"), ("h100", "sm_90"), ("rtx5090", "sm_120"))
    report = probe.fleet_report(torch, opts)
    assert report["arch_source"] == "torch._C._cuda_getArchFlags()"
    assert (
        report["verdict"] == "fleet: rtx4090 ✓ h100 ✓ rtx5090 ✗ (sm_120 not in torch 2.4.1+cu121)"
    )
    answer = probe.without_gpu(opts, {"fleet": report})
    assert (answer["status"], answer["reason"]) == (
        "fail",
        "fleet rtx5090: sm_120 not in torch 2.4.1+cu121",
    )


def test_a_fleet_that_passes_without_a_gpu_passes_and_says_the_device_was_not_checked() -> None:
    torch = fake_torch("2.8.0+cu128", "12.8", "sm_70 sm_75 sm_80 sm_86 sm_90 sm_100 sm_120")
    opts = fleet_opts(("rtx5090", "sm_120"), ("a100", "sm_80"), driver="550.54.15")
    answer = probe.without_gpu(opts, {"fleet": probe.fleet_report(torch, opts)})
    assert answer["status"] == "pass"
    assert (
        answer["reason"]
        == "fleet: rtx5090 ✓ a100 ✓ (no GPU visible: the device checks did not run)"
    )


def test_the_probe_fails_a_driver_below_the_floor_of_torchs_cuda() -> None:
    torch = fake_torch("2.11.0+cu130", "13.0", "sm_75 sm_80 sm_86 sm_90 sm_100 sm_120")
    opts = fleet_opts(("h100", "sm_90"), driver="550.54.15")
    answer = probe.without_gpu(opts, {"fleet": probe.fleet_report(torch, opts)})
    assert answer["status"] == "fail"
    assert "needs NVIDIA driver >= 580; the fleet's oldest driver is 550.54.15" in answer["reason"]


def test_without_get_arch_flags_the_probe_reads_libtorch_python(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "libtorch_python.so").write_bytes(b"\x7fELF\0junk\0sm_80 sm_90\0tail")
    torch = fake_torch("2.4.1+cu121", "12.1", None, tmp_path)
    report = probe.fleet_report(torch, fleet_opts(("h100", "sm_90")))
    assert (report["arch"], report["arch_source"]) == (
        ["sm_80", "sm_90"],
        "torch/lib/libtorch_python.so",
    )


def test_a_cpu_build_makes_the_fleet_not_applicable() -> None:
    torch = fake_torch("2.13.0+cpu", None, "")
    report = probe.fleet_report(torch, fleet_opts(("h100", "sm_90")))
    assert report["verdict"] == "fleet: not applicable (CPU build)"
    answer = probe.without_gpu({"gpu": "optional"}, {"fleet": report})
    assert (answer["status"], answer["reason"]) == (
        "skipped",
        "no GPU visible; fleet: not applicable (CPU build)",
    )


def test_an_extension_is_judged_file_by_file_against_each_gpu() -> None:
    extension = {
        "dist": "flash-attn",
        "version": "2.7.4",
        "files": [{"path": "flash_attn_2_cuda.so", "arch": ["sm_80", "sm_90"]}],
    }
    judged = probe.judge_extension(
        extension, [{"name": "h100", "sm": "sm_90"}, {"name": "rtx5090", "sm": "sm_120"}]
    )
    assert [(g["gpu"], g["status"]) for g in judged["gpus"]] == [
        ("h100", "pass"),
        ("rtx5090", "fail"),
    ]
    assert judged["gpus"][1]["reason"] == "sm_120 not in flash-attn flash_attn_2_cuda.so"


# ---------------------------------------------------------------- the report


def report_with_fleet() -> dict[str, Any]:
    report = parse_report(
        __import__("json").loads((FIXTURES / "reports" / "report.json").read_text()), "fixture"
    )
    report = copy.deepcopy(report)
    torch = fake_torch("2.4.1+cu121", "12.1", " ".join(CU121))
    fleet = probe.fleet_report(
        torch, fleet_opts(("rtx4090", "sm_89"), ("h100", "sm_90"), ("rtx5090", "sm_120"))
    )
    fleet["extensions"] = [
        probe.judge_extension(
            {
                "dist": "xformers",
                "version": "0.0.28",
                "files": [{"path": "xformers/_C.so", "arch": ["sm_80", "sm_90"]}],
            },
            [
                {"name": "rtx4090", "sm": "sm_89"},
                {"name": "h100", "sm": "sm_90"},
                {"name": "rtx5090", "sm": "sm_120"},
            ],
        )
    ]
    cuda_probe = next(p for p in report["cells"][0]["probes"] if p["probe"] == "cuda")
    cuda_probe["details"]["fleet"] = fleet
    return parse_report(report, "with fleet")  # the fleet details hold to the report schema


def test_markdown_has_a_compact_fleet_line_per_cell() -> None:
    report = report_with_fleet()
    assert fleet_line(report["cells"][0]) == (
        "fleet: rtx4090 ✓ h100 ✓ rtx5090 ✗ (sm_120 not in torch 2.4.1+cu121)"
    )
    text = render_markdown(report)
    assert "### GPU fleet" in text
    assert "fleet: rtx4090 ✓ h100 ✓ rtx5090 ✗ (sm\\_120 not in torch 2.4.1+cu121)" in text


def test_html_shows_the_fleet_grid_gpu_down_the_side() -> None:
    page = render_html(report_with_fleet())
    assert "<h3>GPU fleet</h3>" in page
    assert '<tr class="fleet-fail"><td>rtx5090' in page
    assert "xformers 0.0.28" in page
