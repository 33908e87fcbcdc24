"""Every shipped profile rule cites one line of one file at one commit, and quotes that line.

tests/fixtures/profile_sources.json holds the cited lines as read from the repositories
(scripts/profile_sources.py checks it, and regenerates it from git checkouts), so these tests
hold each quote to its source without a network.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from builder.profiles import SHIPPED, SOURCE_KINDS, Citation, Rule, parse_citation, read_profile

SNAPSHOT = Path(__file__).resolve().parents[1] / "fixtures" / "profile_sources.json"
LINES: dict[str, str] = json.loads(SNAPSHOT.read_text())["lines"]
RULES = [
    pytest.param(rule, id=f"{path.stem}:{rule.text}:{rule.kind}")
    for path in sorted(SHIPPED.glob("*.yaml"))
    for rule in read_profile(path).requirements
]


def module(rule: Rule) -> str:
    """How the code spells the distribution (`flash-attn` -> `flash_attn`)."""
    return canonicalize_name(rule.name).replace("-", "_")


@pytest.mark.parametrize("rule", RULES)
def test_every_shipped_rule_cites_a_line_at_a_commit_and_quotes_it(rule: Rule) -> None:
    assert rule.kind in SOURCE_KINDS
    assert isinstance(parse_citation(rule.source), Citation), rule.source
    assert rule.quote.strip()
    assert LINES.get(rule.source) == rule.quote, "read the line again and update the snapshot"


@pytest.mark.parametrize("rule", [r for r in RULES if r.values[0].kind == "requirements"])
def test_a_requirements_rule_states_exactly_its_line(rule: Rule) -> None:
    line = Requirement(rule.quote.strip())
    assert canonicalize_name(line.name) == rule.name
    assert line.specifier == rule.requirement.specifier


@pytest.mark.parametrize("rule", [r for r in RULES if r.values[0].kind != "requirements"])
def test_a_readme_or_code_rule_names_its_package_and_range_in_its_line(rule: Rule) -> None:
    spelled = rule.quote.replace("-", "_").lower()
    assert module(rule) in spelled or rule.name in rule.quote.lower()
    assert rule.range.replace("-", "_") in spelled


def test_the_readme_pins_of_multitalk_are_tested_with_not_required() -> None:
    multitalk = read_profile(SHIPPED / "multitalk.yaml")
    soft = {r.text for r in multitalk.requirements if r.soft}
    assert {"torch==2.4.1", "torchvision==0.19.1", "torchaudio==2.4.1", "xformers==0.0.28"} <= soft
    hard = {r.text for r in multitalk.requirements if not r.soft and not r.optional}
    assert {"torch", "xformers", "misaki[en]", "librosa", "soundfile", "einops"} <= hard


@pytest.mark.parametrize(
    ("profile", "name"),
    [
        ("wan2.2-s2v", "sentencepiece"),  # the tokenizer code it cited does not import it
        ("wan2.2-s2v", "soundfile"),  # librosa requires it; Wan's code never imports it
        ("wan2.2", "scipy"),  # in no upstream requirements file; the code only probes for it
    ],
)
def test_rules_without_a_source_are_gone(profile: str, name: str) -> None:
    assert all(r.name != name for r in read_profile(SHIPPED / f"{profile}.yaml").requirements)


def test_the_snapshot_holds_only_well_formed_citations() -> None:
    assert LINES
    assert all(isinstance(parse_citation(source), Citation) for source in LINES)
    assert all("\n" not in line for line in LINES.values())
