"""Reports: schema validation, Markdown / HTML / JUnit / JSON rendering, diffs and merges."""

from __future__ import annotations

import copy
import io
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from builder.errors import InputError
from builder.log import Log
from builder.report import (
    append_step_summary,
    cell_evidence,
    diff_reports,
    evidence_line,
    load_report,
    merge_reports,
    parse_report,
    render,
    render_diff,
    render_html,
    render_junit,
    render_markdown,
    report_schema,
    run_report,
)
from tests.conftest import FIXTURES, Run, run_cli

FIXTURE = FIXTURES / "reports" / "report.json"
Report = dict[str, Any]


def fixture() -> Report:
    return load_report(FIXTURE)


def by_id(report: Report, fragment: str) -> dict[str, Any]:
    """The one cell whose id contains `fragment`."""
    (cell,) = [c for c in report["cells"] if fragment in c["id"]]
    return cell


def write(path: Path, report: Report) -> Path:
    path.write_text(json.dumps(report, indent=2))
    return path


def log() -> tuple[Log, io.StringIO]:
    stream = io.StringIO()
    return Log(stream=stream), stream


def synthetic(bases: int, pin_sets: int) -> Report:
    """A report of bases x pin sets cells, cycling through every status; every third cached."""
    report = fixture()
    template = report["cells"][0]
    statuses = ["pass", "fail", "error", "skipped", "pass"]
    cells = []
    for b in range(bases):
        for p in range(pin_sets):
            cell = copy.deepcopy(template)
            base, tf = f"base-cu12{b}-py311", f"4.{40 + p}.0"
            cell.update(
                id=f"{base}.torch-2.4.1.transformers-{tf}",
                base=base,
                status=statuses[(b + p) % 5],
                reason="probe imports failed",
            )
            cell["axes"] = {"base": base, "torch": "2.4.1", "transformers": tf}
            cell["pins"] = ["torch==2.4.1", f"transformers=={tf}"]
            cell["cache"]["hit"] = (b * pin_sets + p) % 3 == 0
            cells.append(cell)
    report["cells"] = cells
    return parse_report(report, "synthetic")


# ---------------------------------------------------------------- loading and the schema


def test_the_fixture_is_valid_against_the_schema() -> None:
    data = json.loads(FIXTURE.read_text())
    jsonschema.Draft202012Validator.check_schema(report_schema())
    jsonschema.Draft202012Validator(report_schema()).validate(data)
    assert fixture()["summary"] == data["summary"]


def test_the_schema_documents_every_property() -> None:
    def undocumented(node: Any, where: str) -> list[str]:
        if isinstance(node, list):
            return [m for i, x in enumerate(node) for m in undocumented(x, f"{where}[{i}]")]
        if not isinstance(node, dict):
            return []
        missing = [
            f"{where}.{name}"
            for name, sub in node.get("properties", {}).items()
            if isinstance(sub, dict)
            and "description" not in sub
            and "$ref" not in sub
            and sub.get("type") not in ("integer", "string", "boolean")
        ]
        return missing + [m for k, v in node.items() for m in undocumented(v, f"{where}.{k}")]

    schema = report_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert undocumented(schema, "$") == []
    assert all("description" in d for d in schema["$defs"].values())


def test_an_invalid_report_names_the_file_and_the_json_path(tmp_path: Path) -> None:
    report = json.loads(FIXTURE.read_text())
    report["cells"][2]["status"] = "passed"
    report["cells"][2]["lock"]["sha256"] = 5
    del report["cells"][0]["probes"][1]["evidence"]
    path = write(tmp_path / "bad.json", report)
    with pytest.raises(InputError) as caught:
        load_report(path)
    message = caught.value.message
    assert f"{path}: $.cells[2].status: 'passed' is not one of" in message
    assert f"{path}: $.cells[0].probes[1]: 'evidence' is a required property" in message
    assert f"{path}: $.cells[2].lock.sha256: 5 is not of type 'string', 'null'" in message
    assert (
        message.index("$.cells[0]")
        < message.index("$.cells[2].lock")
        < message.index("$.cells[2].status")
    )


def test_a_file_that_is_not_json_is_an_input_error_with_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text('{\n  "schema_version": 1,\n  oops\n}')
    with pytest.raises(InputError, match=r"report.json:3:3: invalid JSON"):
        load_report(path)


def test_a_newer_schema_version_is_refused_by_name(tmp_path: Path) -> None:
    path = write(tmp_path / "r.json", {**json.loads(FIXTURE.read_text()), "schema_version": 2})
    with pytest.raises(InputError, match=r"\$\.schema_version: unsupported version 2"):
        load_report(path)


def test_a_missing_report_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="report not found"):
        load_report(tmp_path / "nope.json")


def test_the_summary_is_recomputed_from_the_cells(tmp_path: Path) -> None:
    report = json.loads(FIXTURE.read_text())
    report["summary"] = {"total": 99, "pass": 99, "fail": 0, "error": 0, "skipped": 0}
    assert load_report(write(tmp_path / "r.json", report))["summary"] == {
        "total": 8,
        "pass": 3,
        "fail": 3,
        "error": 1,
        "skipped": 1,
    }


# ---------------------------------------------------------------- evidence


def test_the_evidence_line_is_the_last_exception_of_a_traceback() -> None:
    text = "Traceback (most recent call last):\n  File 'x.py'\nImportError: a\n\nDuring...\nmod.sub.FooError: b\n  \n"
    assert evidence_line(text) == "mod.sub.FooError: b"


def test_the_evidence_line_of_a_build_log_is_the_specific_error_not_buildkits_wrapper() -> None:
    text = (
        "#12 3.2 Looking in links: /wheelhouse\n"
        "#12 9.8 ERROR: Could not find a version that satisfies the requirement decord==0.6.0\n"
        '#12 ERROR: process "/bin/sh -c pip install" did not complete successfully: exit code: 1\n'
    )
    assert evidence_line(text) == (
        "ERROR: Could not find a version that satisfies the requirement decord==0.6.0"
    )


def test_without_an_error_the_evidence_line_is_the_last_non_empty_line_without_colours() -> None:
    assert evidence_line("step 1\n\x1b[31mKilled\x1b[0m\n\n  \n") == "Killed"
    assert evidence_line("") == ""


def test_a_long_evidence_line_is_cut() -> None:
    assert len(evidence_line("RuntimeError: " + "x" * 1000)) == 240


def test_a_cell_failed_at_build_is_explained_by_its_build_log() -> None:
    cell = by_id(fixture(), "transformers-4.47.0.diffusers-0.31.0")
    assert cell_evidence(cell).startswith("ERROR: THESE PACKAGES DO NOT MATCH THE HASHES")


# ---------------------------------------------------------------- Markdown


def test_markdown_has_a_grid_with_bases_down_and_pin_sets_across() -> None:
    text = render_markdown(fixture())
    assert "| base | 1 | 2 | 3 | 4 |" in text
    assert "| runpod-cu124-py311 | ✅♻️ | ✅♻️ | ❌ | ❌ |" in text
    assert "| runpod-cu118-py310 | ❌ | — | — | — |" in text
    assert "| pytorch-cu124-py311 | 💥 | ⏭️ | — | — |" in text
    assert "| # | torch | transformers | diffusers |" in text
    assert "| 3 | 2.4.1 | 4.47.0 | 0.35.1 |" in text


def test_markdown_lists_each_failure_with_its_reason_and_one_line_of_evidence() -> None:
    text = render_markdown(fixture())
    failures = text.split("### Failures")[1].split("### Lock changes")[0]
    items = [line for line in failures.splitlines() if line.startswith("- ")]
    assert len(items) == 4
    assert "`ModuleNotFoundError: No module named 'transformers.models.qwen2_5_vl'`" in failures
    assert "`ImportError: numpy.core.multiarray failed to import`" in failures
    assert "  `Killed`" in failures
    assert "Traceback" not in failures


def test_markdown_shows_the_lock_diffs() -> None:
    text = render_markdown(fixture()).split("### Lock changes")[1]
    assert "+0 −0 ~1" in text
    assert "| peft | 0.13.2 | 0.14.0 |" in text
    assert "| easydict |  | 1.13 |" in text


def test_markdown_escapes_text_that_would_break_it() -> None:
    report = fixture()
    cell = by_id(report, "transformers-4.47.0.diffusers-0.35.1")
    cell["reason"] = "a | b <details> *c*"
    cell["probes"][0]["evidence"] = "ValueError: `x`"
    text = render_markdown(report)
    assert r"a \| b &lt;details&gt; \*c\*" in text
    assert "`` ValueError: `x` ``" in text


def test_the_markdown_grid_of_fifty_cells_stays_narrow() -> None:
    text = render_markdown(synthetic(bases=5, pin_sets=10))
    grid = [line for line in text.split("Columns:")[0].splitlines() if line.startswith("|")]
    assert len(grid) == 2 + 5
    assert max(len(line) for line in grid) <= 100
    assert sum(line.count("♻️") for line in grid) == 17  # every third cell came from the cache


def test_fifty_pin_sets_wrap_into_several_narrow_tables() -> None:
    text = render_markdown(synthetic(bases=1, pin_sets=50))
    headers = [line for line in text.splitlines() if line.startswith("| base |")]
    assert len(headers) == 5
    assert headers[-1].endswith("| 46 | 47 | 48 | 49 | 50 |")
    assert max(len(line) for line in text.splitlines() if line.startswith("| base")) <= 100


def test_markdown_is_cut_to_fit_a_github_comment() -> None:
    text = render_markdown(synthetic(bases=20, pin_sets=40))
    assert len(text) <= 65_000
    assert text.endswith("_… cut to fit GitHub's size limit; the HTML report has everything._\n")


def test_markdown_for_a_clean_run_has_no_failure_section() -> None:
    text = render_markdown(synthetic(bases=1, pin_sets=1))
    assert "✅ 1 pass" in text
    assert "### Failures" not in text


# ---------------------------------------------------------------- HTML


def test_html_is_one_self_contained_page() -> None:
    page = render_html(fixture())
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"<link|<script[^>]+src=|@import|url\(|<img|<iframe", page)
    assert not re.search(r"(?:src|href)=\"(?:https?:)?//", page)


def test_html_escapes_everything_from_the_report() -> None:
    page = render_html(fixture())
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page


def test_html_has_the_grid_filters_and_a_section_per_cell() -> None:
    report = fixture()
    page = render_html(report)
    for cell in report["cells"]:
        assert f'<details class="cell status-{cell["status"]}" id="cell-{cell["id"]}"' in page
        assert f'<td class="cell status-{cell["status"]}" data-cell="{cell["id"]}"' in page
    for name in ("base", "torch", "cuda", "status"):
        assert f'<select id="filter-{name}" data-filter="{name}">' in page
    assert '<option value="cpu">cpu</option>' in page
    assert "9.9 GB" in page  # image size
    assert "<td>transformers</td><td>4.47.0</td>" in page  # versions from the lock
    assert (
        by_id(report, "runpod-cu124-py311.torch-2.4.1.transformers-4.51.3.diffusers-0.35.1")[
            "lock"
        ]["sha256"]
        in page
    )


# ---------------------------------------------------------------- JUnit


def junit_cases(text: str) -> list[ET.Element]:
    return ET.fromstring(text).findall("./testsuite/testcase")


def test_junit_has_one_testcase_per_cell_and_probe_plus_failed_stages() -> None:
    report = fixture()
    cases = junit_cases(render_junit(report))
    expected = {(c["id"], p["probe"]) for c in report["cells"] for p in c["probes"]}
    expected |= {
        (by_id(report, "4.47.0.diffusers-0.35.1")["id"], "check"),
        (by_id(report, "4.47.0.diffusers-0.31.0")["id"], "build"),
    }
    assert {(c.get("classname"), c.get("name")) for c in cases} == expected
    assert len(cases) == len(expected) == 26


def test_junit_failures_carry_the_reason_and_the_evidence() -> None:
    root = ET.fromstring(render_junit(fixture()))
    assert root.attrib | {"time": ""} == {
        "name": "builder",
        "tests": "26",
        "failures": "4",
        "errors": "1",
        "skipped": "2",
        "time": "",
    }
    numpy = root.find(".//testcase[@name='numpy']/failure")
    assert numpy is not None and numpy.get("message") == "decord needs NumPy 1.x"
    assert "ImportError: numpy.core.multiarray failed to import" in (numpy.text or "")
    timeout = root.find(".//testcase[@name='generate']/error")
    assert timeout is not None and "<script>" in (timeout.text or "")
    build = root.find(".//testcase[@name='build']/failure")
    assert build is not None and "did not complete successfully" in (build.text or "")
    assert len(root.findall(".//skipped")) == 2


def test_junit_drops_characters_xml_cannot_hold() -> None:
    report = fixture()
    report["cells"][2]["probes"][0]["evidence"] = "\x1b[31mboom\x00\x07\x1b[0m"
    failure = ET.fromstring(render_junit(report)).find(".//testcase[@name='imports']/failure")
    assert failure is not None and failure.text == "boom"


# ---------------------------------------------------------------- JSON


def test_json_is_the_validated_report_with_sorted_keys() -> None:
    text = render(fixture(), "json")
    data = json.loads(text)
    jsonschema.Draft202012Validator(report_schema()).validate(data)
    assert data == fixture()
    assert list(data) == sorted(data)
    assert text == json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_the_extra_fields_validate_writes_are_accepted_and_rendered() -> None:
    report = fixture()
    cell = report["cells"][0]
    cell["requirements"], cell["profiles"] = ["numpy<2"], ["wan2.2-s2v"]
    cell["build"] |= {"cell_id": cell["id"], "lock_sha256": None}
    cell["check"]["id"] = cell["id"]
    checked = parse_report(report, "extras")
    for fmt in ("md", "html", "junit", "json"):
        assert render(checked, fmt)


# ---------------------------------------------------------------- diff


def changed_run() -> tuple[Report, Report]:
    """Old = the fixture; new: a passing cell fails, a failing one passes, a pin moved,
    the last cell is gone and a new one appeared."""
    old = fixture()
    new = copy.deepcopy(old)
    broke = new["cells"][0]
    broke.update(status="fail", reason="imports: boom")
    broke["probes"][0].update(status="fail", reason="boom", evidence="ImportError: boom")
    fixed = by_id(new, "4.47.0.diffusers-0.35.1")
    fixed.update(status="pass", reason="")
    fixed["probes"][0].update(status="pass")
    new["cells"][1]["lock"]["packages"]["transformers"] = "4.52.0"
    gone = new["cells"].pop()
    added = copy.deepcopy(gone)
    added["id"] = gone["id"].replace("0.35.1", "0.36.0")
    new["cells"].append(added)
    return old, parse_report(new, "new")


def test_the_diff_lists_new_failures_first() -> None:
    old, new = changed_run()
    diff = diff_reports(old, new)
    assert [(c.kind, c.id.split(".")[0]) for c in diff.changes] == [
        ("regressed", "runpod-cu124-py311"),
        ("fixed", "runpod-cu124-py311"),
        ("same status", "runpod-cu124-py311"),
        ("added", "bookworm-cpu"),
        ("removed", "bookworm-cpu"),
    ]
    regressed, fixed, pins = diff.changes[:3]
    assert regressed.probes == (("imports", "pass", "fail"),)
    assert regressed.evidence == "ImportError: boom"
    assert fixed.probes == (("imports", "fail", "pass"),)
    assert pins.pins == (("transformers", "4.51.3", "4.52.0"),)
    assert diff.regressed


def test_a_probe_that_passed_and_now_fails_is_a_regression_even_in_a_failing_cell() -> None:
    old = fixture()
    new = copy.deepcopy(old)
    by_id(new, "4.47.0.diffusers-0.35.1")["probes"][1]["status"] = "error"
    (change,) = diff_reports(old, parse_report(new, "new")).changes
    assert change.kind == "regressed" and change.old == change.new == "fail"


def test_pins_come_from_the_lock_diff_when_the_old_run_had_no_lock() -> None:
    old = fixture()
    new = copy.deepcopy(old)
    by_id(old, "4.47.0.diffusers-0.31.0")["lock"] = None
    (change,) = diff_reports(parse_report(old, "old"), parse_report(new, "new")).changes
    assert change.pins == (("easydict", None, "1.13"), ("ftfy", "6.2.3", None))


def test_the_diff_renders_as_markdown_and_json() -> None:
    diff = diff_reports(*changed_run())
    text = render_diff(diff, "md")
    rows = [line for line in text.splitlines() if line.startswith("| ")][2:]
    assert rows[0].startswith("| regressed | `runpod-cu124-py311.torch-2.4.1.transformers-4.51.3")
    assert "| ✅ pass | ❌ fail | imports: ✅ → ❌ |" in rows[0]
    assert "transformers 4.51.3 → 4.52.0" in rows[2]
    assert "**Something that passed now fails.**" in text
    data = json.loads(render_diff(diff, "json"))
    assert data["regressed"] is True
    assert data["counts"]["regressed"] == 1 and data["counts"]["removed"] == 1


def test_diff_exits_1_on_a_regression_and_0_otherwise(tmp_path: Path) -> None:
    old, new = changed_run()
    old_path, new_path = write(tmp_path / "old.json", old), write(tmp_path / "new.json", new)
    quiet = Log(verbosity=-1)
    _, code = run_report([new_path], fmt=None, merge=False, old=old_path, log=quiet)
    assert code == 1
    fixed = copy.deepcopy(old)
    by_id(fixed, "4.47.0.diffusers-0.35.1").update(status="pass", reason="")
    fixed_path = write(tmp_path / "fixed.json", fixed)
    _, code = run_report([fixed_path], fmt="json", merge=False, old=old_path, log=quiet)
    assert code == 0
    text, code = run_report([old_path], fmt=None, merge=False, old=old_path, log=quiet)
    assert code == 0 and "No cell changed" in text


def test_diff_refuses_formats_other_than_md_and_json() -> None:
    with pytest.raises(InputError, match="--diff prints md or json"):
        run_report([FIXTURE], fmt="html", merge=False, old=FIXTURE, log=Log(verbosity=-1))


# ---------------------------------------------------------------- merge


def parts() -> list[tuple[str, Report]]:
    report = fixture()
    a, b = copy.deepcopy(report), copy.deepcopy(report)
    a["cells"], b["cells"] = report["cells"][:4], copy.deepcopy(report["cells"][3:])
    a["run"].update(started="2025-06-02T10:00:00Z", finished="2025-06-02T10:20:00+00:00")
    b["run"].update(started="2025-06-02T09:59:00+00:00", finished="2025-06-02T10:30:00Z")
    b["cells"][0]["reason"] = "from b"
    return [("a.json", parse_report(a, "a")), ("b.json", parse_report(b, "b"))]


def test_merge_concatenates_cells_and_spans_the_runs() -> None:
    merged = merge_reports(parts(), Log(verbosity=-1))
    assert [c["id"] for c in merged["cells"]] == [c["id"] for c in fixture()["cells"]]
    assert merged["summary"] == fixture()["summary"]
    assert merged["run"]["started"] == "2025-06-02T09:59:00+00:00"
    assert merged["run"]["finished"] == "2025-06-02T10:30:00Z"
    assert merged["run"]["seconds"] == 31 * 60
    jsonschema.Draft202012Validator(report_schema()).validate(merged)


def test_a_duplicate_cell_is_taken_from_the_later_file_with_a_warning() -> None:
    quiet, stream = log()
    merged = merge_reports(parts(), quiet)
    assert merged["cells"][3]["reason"] == "from b"
    assert stream.getvalue() == (
        f"warning: {merged['cells'][3]['id']}: in a.json and b.json; keeping b.json\n"
    )


# ---------------------------------------------------------------- the command and the job summary


def test_the_report_command_writes_each_format_to_a_file(tmp_path: Path) -> None:
    for fmt, check in (("junit", ET.fromstring), ("json", json.loads), ("html", str.strip)):
        out = tmp_path / f"report.{fmt}"
        done = run_cli("report", str(FIXTURE), "--format", fmt, "-o", str(out))
        assert (done.code, done.out) == (0, "")
        assert check(out.read_text())
    done = run_cli("report", str(FIXTURE))
    assert done.code == 0 and done.out.startswith("## builder compatibility report")


def merged_id(paths: list[Path]) -> str:
    return str(json.loads(paths[1].read_text())["cells"][0]["id"])


def test_the_report_command_merges_fan_out_reports(tmp_path: Path) -> None:
    paths = [write(tmp_path / name, report) for name, report in parts()]
    done = run_cli("report", "--merge", *map(str, paths), "-o", str(tmp_path / "all.json"))
    assert done.code == 0, done.err
    assert (
        f"warning: {merged_id(paths)}: in {paths[0]} and {paths[1]}; keeping {paths[1]}" in done.err
    )
    assert load_report(tmp_path / "all.json")["summary"]["total"] == 8


def test_the_report_command_needs_merge_for_several_files() -> None:
    done = run_cli("report", str(FIXTURE), str(FIXTURE))
    assert done.code == 2
    assert "expected one report, got 2" in done.err and "--merge" in done.err


def test_the_report_command_exits_1_when_the_diff_has_a_regression(tmp_path: Path) -> None:
    old, new = changed_run()
    done = run_cli(
        "report",
        str(write(tmp_path / "new.json", new)),
        "--diff",
        str(write(tmp_path / "old.json", old)),
    )
    assert done.code == 1
    assert done.out.startswith("### Changes since the previous report")


def test_the_report_command_exits_2_for_an_invalid_report(tmp_path: Path) -> None:
    report = json.loads(FIXTURE.read_text())
    report["cells"][0]["cache"]["hit"] = "yes"
    done = run_cli("report", str(write(tmp_path / "bad.json", report)))
    assert done.code == 2
    assert "bad.json: $.cells[0].cache.hit: 'yes' is not of type 'boolean'" in done.err


def test_the_step_summary_is_appended_only_when_there_is_a_summary_file(tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    assert append_step_summary(fixture(), summary)
    assert summary.read_text().startswith("earlier step\n## builder compatibility report")
    assert not append_step_summary(fixture(), None)


# ---------------------------------------------------------------- bad input (fixtures in reports/bad)


BAD = FIXTURES / "reports" / "bad"


def assert_refused(done: Any, *fragments: str) -> None:
    """Exit 2, one message naming what is wrong, no traceback, nothing on stdout."""
    assert done.code == 2, done.err
    assert "Traceback" not in done.err and done.out == ""
    for fragment in fragments:
        assert fragment in done.err


def test_an_impossible_date_is_refused_on_load_naming_the_file_and_field(tmp_path: Path) -> None:
    bad, out = BAD / "impossible_date.json", tmp_path / "all.json"
    done = run_cli("report", "--merge", str(FIXTURE), str(bad), "-o", str(out))
    assert_refused(done, f"{bad}: $.run.started: '2025-99-99T00:00:00+00:00' is not a 'date-time'")
    assert list(tmp_path.iterdir()) == []


def test_an_impossible_date_in_a_cache_timestamp_is_refused_too() -> None:
    report = fixture()
    report["cells"][0]["cache"]["stored"] = "2025-02-29T10:00:00Z"
    with pytest.raises(
        InputError, match=r"x: \$\.cells\[0\]\.cache\.stored: .*day is out of range"
    ):
        parse_report(report, "x")


def test_a_report_nested_100k_deep_is_refused_as_nested_too_deeply(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    assert_refused(run_cli("report", "--merge", str(path)), f"{path}: nested too deeply")


def test_probe_details_nested_too_deep_to_render_are_refused_by_json_path(tmp_path: Path) -> None:
    report = json.loads(FIXTURE.read_text())
    report["cells"][1]["probes"][0]["details"] = json.loads('{"a": ' * 500 + "1" + "}" * 500)
    path = write(tmp_path / "deep.json", report)
    done = run_cli("report", str(path), "--format", "html")
    assert_refused(done, f"{path}: $.cells[1].probes[0].details.a.a.a", "nested too deeply")


def test_a_cell_id_twice_in_one_report_is_refused_naming_both_positions() -> None:
    bad = BAD / "duplicate_cell.json"
    cell_id = json.loads(bad.read_text())["cells"][3]["id"]
    done = run_cli("report", str(bad))
    assert_refused(done, f"{bad}: $.cells[7].id: {cell_id!r} is already the id of $.cells[3]")


def test_a_report_that_is_not_utf8_is_refused_naming_the_byte() -> None:
    bad = BAD / "not_utf8.json"
    assert_refused(run_cli("report", str(bad)), f"{bad}: cannot read report: not UTF-8 (byte")


def test_a_report_path_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=f"{tmp_path}: cannot read report: not a regular file"):
        load_report(tmp_path)


def test_a_report_path_that_is_a_fifo_is_refused_without_waiting_for_a_writer(
    tmp_path: Path,
) -> None:
    fifo = tmp_path / "report.json"
    os.mkfifo(fifo)
    argv = [sys.executable, "-m", "builder", "report", str(fifo)]
    # A timeout, not a sleep: reading the FIFO would block until a writer came.
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert_refused(
        Run(done.returncode, done.stdout, done.stderr), f"{fifo}: cannot read report: not a regular"
    )


def test_rendering_a_report_writes_nothing_but_the_output_file(tmp_path: Path) -> None:
    for fmt in ("md", "html", "junit", "json"):
        done = run_cli("report", str(FIXTURE), "--format", fmt, "-o", f"out.{fmt}", cwd=tmp_path)
        assert done.code == 0, done.err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"out.{f}" for f in ("html", "json", "junit", "md")
    ]


def test_a_step_summary_that_cannot_be_appended_to_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=f"{tmp_path}: cannot append the job summary"):
        append_step_summary(fixture(), tmp_path)


SECRETS = ("s3cret-pass", "abc.def.ghi", "tok-123", "hf_" + "A" * 34)


def leaky() -> Report:
    """The fixture with credentials in a log tail, probe evidence, a reason and the command."""
    report = fixture()
    report["run"]["command"] = (
        "builder validate --index-url https://me:s3cret-pass@pypi.example/simple"
    )
    failed = by_id(report, "transformers-4.47.0.diffusers-0.31.0")
    failed["build"]["log_tail"] += "\n#9 GET /simple/torch/ Authorization: Bearer abc.def.ghi\n"
    failed["reason"] = "download failed: https://files.example/x.whl?token=tok-123"
    failing = by_id(report, "transformers-4.47.0.diffusers-0.35.1")
    failing["probes"][0]["evidence"] = f"OSError: 401 for HF_TOKEN={SECRETS[3]}"
    return parse_report(report, "leaky")


def test_no_format_shows_credentials_from_logs_evidence_or_urls() -> None:
    report = leaky()
    outputs = [render(report, fmt) for fmt in ("md", "html", "junit", "json")]
    outputs += [render_diff(diff_reports(fixture(), report), fmt) for fmt in ("md", "json")]
    for text in outputs:
        assert not [s for s in SECRETS if s in text]
    html_page = render_html(report)
    assert "https://***@pypi.example/simple" in html_page
    assert "Authorization: ***" in html_page and "token=***" in html_page
    assert report["run"]["command"].endswith("me:s3cret-pass@pypi.example/simple")  # data kept
