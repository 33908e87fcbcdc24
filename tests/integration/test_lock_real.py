"""Lock for real: uv (and pip-compile in a container) against PyPI, the lock files inspected."""

from __future__ import annotations

import json
import re
import ssl
import urllib.request
from pathlib import Path

import pytest
from packaging.version import Version

from builder.lock import body_digest, parse_lock, read_lock, stale_reason
from builder.matrix import load_matrix
from tests.conftest import BASE_IMAGE, SYSTEM_CA, Run, run_cli

pytestmark = [pytest.mark.network, pytest.mark.slow]

ONE_CELL = """version: 1
bases:
  bookworm: {{image: "{base}", python: "3.11"}}
axes:
  base: [bookworm]
requirements: {requirements}
indexes:
  ca_bundle: {ca}
"""

# numpy 2.3 dropped Python 3.10, so the newest numpy differs between these two interpreters;
# the host's own Python (3.11) would give yet another answer (2.4.x), so neither can be it.
TWO_PYTHONS = """version: 1
bases:
  py310: {{image: "{base}", python: "3.10"}}
  py312: {{image: "{base}", python: "3.12"}}
axes:
  base: [py310, py312]
  numpy: ["<2", ">=2"]
exclude:
  - {{base: py312, numpy: "<2"}}
requirements: []
indexes:
  ca_bundle: {ca}
"""

# transformers 4.47.0 requires tokenizers>=0.21,<0.22: the 0.20.0 cell has no solution.
CONFLICT = """version: 1
bases:
  bookworm: {{image: "{base}", python: "3.11"}}
axes:
  base: [bookworm]
  tokenizers: ["0.20.0", "0.21.0"]
requirements: ["transformers==4.47.0"]
indexes:
  ca_bundle: {ca}
"""


def write_matrix(project: Path, template: str, base: str = BASE_IMAGE, **values: object) -> Path:
    project.mkdir(parents=True, exist_ok=True)
    path = project / "matrix.yaml"
    path.write_text(template.format(base=base, ca=SYSTEM_CA, **values))
    return path


def lock(project: Path, *args: str) -> Run:
    return run_cli("lock", *args, cwd=project)


def pins(path: Path) -> dict[str, str]:
    return {p.name: p.version for p in parse_lock(path.read_text())}


def blocks(path: Path) -> dict[str, str]:
    return {p.name: p.block for p in parse_lock(path.read_text())}


def wheel_sha256(name: str, filename_part: str) -> list[str]:
    """The sha256 of each file of `name` on PyPI whose file name contains `filename_part`."""
    request = urllib.request.Request(
        f"https://pypi.org/simple/{name}/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
    )
    context = ssl.create_default_context(cafile=str(SYSTEM_CA))
    with urllib.request.urlopen(request, context=context, timeout=60) as response:
        files = json.load(response)["files"]
    return [f["hashes"]["sha256"] for f in files if filename_part in f["filename"]]


def test_locking_the_same_inputs_twice_writes_a_byte_identical_file(tmp_path: Path) -> None:
    write_matrix(
        tmp_path,
        ONE_CELL.replace("[bookworm]\n", '[bookworm]\n  six: ["1.16.0"]\n'),
        requirements='["attrs"]',
    )
    path = tmp_path / "constraints" / "bookworm.six-1.16.0.txt"
    first = lock(tmp_path)
    assert first.code == 0, first.err
    assert "bookworm.six-1.16.0" in first.out and "updated" in first.out
    assert "+ six==1.16.0" in first.out
    written = path.read_bytes()

    second = lock(tmp_path)
    assert second.code == 0, second.err
    assert f"{path.relative_to(tmp_path)} unchanged" in second.out
    assert not re.search(r"^\s+[+~-] ", second.out, re.M), "an unchanged lock printed a diff"
    assert path.read_bytes() == written

    path.unlink()  # from scratch, with no previous pins to steer the resolver, too
    assert lock(tmp_path).code == 0
    assert path.read_bytes() == written


def test_a_lock_is_resolved_for_the_cells_python_not_the_hosts(tmp_path: Path) -> None:
    write_matrix(tmp_path, TWO_PYTHONS)
    result = lock(tmp_path)
    assert result.code == 0, result.out + result.err
    constraints = tmp_path / "constraints"
    old = constraints / "py310.numpy-lt2.txt"
    assert "# resolver: uv; python 3.10; linux/amd64 (x86_64-manylinux_2_28)" in old.read_text()
    numpy_block = next(p for p in parse_lock(old.read_text()) if p.name == "numpy")
    assert numpy_block.version.startswith("1."), numpy_block.version
    cp310 = wheel_sha256("numpy", f"numpy-{numpy_block.version}-cp310-cp310-manylinux")
    assert cp310, f"PyPI lists no cp310 manylinux wheel of numpy {numpy_block.version}"
    assert {f"sha256:{h}" for h in cp310} <= set(numpy_block.hashes)

    on_310 = Version(pins(constraints / "py310.numpy-ge2.txt")["numpy"])
    on_312 = Version(pins(constraints / "py312.numpy-ge2.txt")["numpy"])
    assert Version("2.2") <= on_310 < Version("2.3"), f"3.10 got numpy {on_310}"
    assert on_312 >= Version("2.3"), f"3.12 got numpy {on_312}"


def test_upgrade_package_bumps_only_that_package_and_upgrade_bumps_all(tmp_path: Path) -> None:
    old = tmp_path / "old"
    write_matrix(old, ONE_CELL, requirements='["attrs==23.1.0", "six==1.15.0"]')
    assert lock(old).code == 0
    old_blocks = blocks(old / "constraints" / "bookworm.txt")
    assert set(old_blocks) == {"attrs", "six"}

    project = tmp_path / "project"
    write_matrix(project, ONE_CELL, requirements='["attrs", "six"]')
    assert lock(project).code == 0
    path = project / "constraints" / "bookworm.txt"
    newest = pins(path)
    assert Version(newest["attrs"]) > Version("23.1.0") and Version(newest["six"]) > Version(
        "1.15.0"
    )
    # Keep the header (its inputs digest is the unpinned cell's) and seal the planted old pins
    # with their own body digest, so they are a fresh lock, not a hand edit.
    fresh = read_lock(path)
    assert fresh is not None
    body = "".join(old_blocks.values())
    sealed = re.sub(
        r"(?m)^# body-sha256: \w+$", f"# body-sha256: {body_digest(body)}", fresh.header
    )
    path.write_text(sealed + body)
    matrix = load_matrix(project / "matrix.yaml")
    assert stale_reason(matrix, matrix.cells[0]) is None

    one = lock(project, "--upgrade-package", "six")
    assert one.code == 0, one.out + one.err
    assert f"~ six 1.15.0 -> {newest['six']}" in one.out
    assert "attrs" not in one.out
    assert pins(path) == {"attrs": "23.1.0", "six": newest["six"]}
    assert blocks(path)["attrs"] == old_blocks["attrs"], "attrs' hashes or notes changed"

    every = lock(project, "--upgrade")
    assert every.code == 0, every.out + every.err
    assert f"~ attrs 23.1.0 -> {newest['attrs']}" in every.out
    assert pins(path) == newest


def test_an_unresolvable_cell_fails_naming_the_conflict_and_the_others_still_lock(
    tmp_path: Path,
) -> None:
    write_matrix(tmp_path, CONFLICT)
    result = lock(tmp_path)
    assert result.code == 1, result.out + result.err
    assert "FAIL bookworm.tokenizers-0.20.0: cannot resolve" in result.out
    failure = result.out.split("FAIL bookworm.tokenizers-0.20.0", 1)[1].split("\nok ", 1)[0]
    assert "transformers==4.47.0 depends on tokenizers" in failure
    assert "tokenizers==0.20.0" in failure
    constraints = tmp_path / "constraints"
    assert not (constraints / "bookworm.tokenizers-0.20.0.txt").exists()
    assert not list(constraints.glob(".*")), "a half-written temp file was left behind"
    assert "ok   bookworm.tokenizers-0.21.0" in result.out
    locked = pins(constraints / "bookworm.tokenizers-0.21.0.txt")
    assert locked["transformers"] == "4.47.0" and locked["tokenizers"] == "0.21.0"


@pytest.mark.docker
def test_pip_tools_and_uv_write_the_same_pins_and_hashes(base_image: str, tmp_path: Path) -> None:
    projects = {
        r: write_matrix(tmp_path / r, ONE_CELL, base_image, requirements='["six", "attrs"]')
        for r in ("uv", "pip-tools")
    }
    for resolver, matrix in projects.items():
        result = lock(matrix.parent, "--resolver", resolver)
        assert result.code == 0, f"{resolver}:\n{result.out}{result.err}"
    texts = {
        r: (m.parent / "constraints" / "bookworm.txt").read_text() for r, m in projects.items()
    }
    assert "# resolver: pip-tools; python 3.11;" in texts["pip-tools"]
    assert "# resolver: uv; python 3.11;" in texts["uv"]

    locked = {r: parse_lock(t) for r, t in texts.items()}
    assert {p.name: p.version for p in locked["uv"]} == {
        p.name: p.version for p in locked["pip-tools"]
    }
    assert {p.name for p in locked["uv"]} == {"attrs", "six"}
    # Both are pure-Python (a py3 wheel and an sdist), so both resolvers hash the same files; for
    # platform wheels uv hashes every file of a release and pip-compile may hash only some.
    assert {p.name: set(p.hashes) for p in locked["uv"]} == {
        p.name: set(p.hashes) for p in locked["pip-tools"]
    }
    assert all(p.hashes for p in locked["uv"])

    def body(text: str) -> str:
        # Drop the header and the `# via -r` notes, which name requirements.in where each
        # resolver saw it (pip-compile: /work/requirements.in, in its container).
        return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))

    assert body(texts["uv"]) == body(texts["pip-tools"])
    for matrix in projects.values():
        loaded = load_matrix(matrix)
        assert stale_reason(loaded, loaded.cells[0]) is None


def test_upgrade_with_upgrade_package_is_a_usage_error(tmp_path: Path) -> None:
    write_matrix(tmp_path, ONE_CELL, requirements='["six"]')
    result = lock(tmp_path, "--upgrade", "--upgrade-package", "six")
    assert result.code == 2
    assert "--upgrade and --upgrade-package exclude each other" in result.err
    assert not (tmp_path / "constraints").exists()


def test_a_pin_bump_keeps_every_other_pin_of_the_lock_it_leaves_behind(tmp_path: Path) -> None:
    """The bumped cell is new (its id names the pin), yet only the bumped pin moves: idna stays
    at 3.4, pinned by the old lock, though the bumped matrix would take the newest idna."""
    one = ONE_CELL.replace("[bookworm]\n", '[bookworm]\n  six: ["SIX"]\n')
    write_matrix(tmp_path, one.replace("SIX", "1.16.0"), requirements='["idna==3.4"]')
    assert lock(tmp_path).code == 0
    write_matrix(tmp_path, one.replace("SIX", "1.17.0"), requirements='["idna"]')
    bumped = lock(tmp_path)
    assert bumped.code == 0, bumped.err
    assert "pins kept from bookworm.six-1.16.0.txt" in bumped.out
    assert re.findall(r"^\s+([+~-] .*)$", bumped.out, re.M) == ["~ six 1.16.0 -> 1.17.0"]
    assert pins(tmp_path / "constraints" / "bookworm.six-1.17.0.txt") == {
        "idna": "3.4",
        "six": "1.17.0",
    }
    (tmp_path / "constraints" / "bookworm.six-1.17.0.txt").unlink()
    assert lock(tmp_path, "--upgrade").code == 0  # --upgrade starts fresh: the newest idna
    upgraded = pins(tmp_path / "constraints" / "bookworm.six-1.17.0.txt")
    assert Version(upgraded["idna"]) > Version("3.4")
