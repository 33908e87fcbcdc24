"""Check or regenerate the snapshot of the source lines the shipped profiles cite.

Every rule of a shipped profile cites `owner/repo@commit:path:line` and quotes that line.
tests/fixtures/profile_sources.json holds each cited line as read from the repository, so that
tests/unit/test_profile_sources.py can hold every quote to it without a network.

    python scripts/profile_sources.py                      # quotes against the snapshot
    python scripts/profile_sources.py --repos DIR          # and against DIR/owner/repo (git)
    python scripts/profile_sources.py --repos DIR --write  # and write what git says

DIR holds checkouts with full history (`git clone https://github.com/Wan-Video/Wan2.2
DIR/Wan-Video/Wan2.2`); a repository missing there keeps its snapshot lines. Lines the
snapshot holds that no rule cites are kept: they are the evidence for a dropped rule.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from builder.profiles import SHIPPED, Citation, parse_citation, read_profile  # noqa: E402

SNAPSHOT = ROOT / "tests" / "fixtures" / "profile_sources.json"


def cited() -> list[tuple[str, str]]:
    """Every shipped rule's citation and quote."""
    paths = sorted(SHIPPED.glob("*.yaml"))
    return [(r.source, r.quote) for path in paths for r in read_profile(path).requirements]


def from_git(repos: Path, citation: Citation) -> str | None:
    """The cited line from a checkout under `repos`, or None where there is none."""
    checkout = repos / citation.repo
    if not checkout.is_dir():
        return None
    shown = subprocess.run(
        ["git", "-C", str(checkout), "show", f"{citation.commit}:{citation.path}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if shown.returncode != 0:
        raise SystemExit(f"{citation}: {shown.stderr.strip()}")
    lines = shown.stdout.splitlines()
    if citation.line > len(lines):
        raise SystemExit(f"{citation}: the file has {len(lines)} lines")
    return lines[citation.line - 1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=Path, help="directory of owner/repo git checkouts")
    parser.add_argument("--write", action="store_true", help="write the snapshot")
    args = parser.parse_args(argv)
    data = json.loads(SNAPSHOT.read_text())
    lines: dict[str, str] = data["lines"]
    problems = []
    for source, quote in cited():
        citation = parse_citation(source)
        assert isinstance(citation, Citation), citation  # read_profile validated it
        read = from_git(args.repos, citation) if args.repos else None
        if read is not None:
            lines[source] = read
        if source not in lines:
            problems.append(f"{source}: not in the snapshot (read it, then add it)")
        elif lines[source] != quote:
            problems.append(
                f"{source}: the profile quotes {quote!r}, the line is {lines[source]!r}"
            )
    if args.write:
        data["lines"] = dict(sorted(lines.items()))
        SNAPSHOT.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    print("\n".join(problems) or f"{len(cited())} cited lines match the snapshot")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
