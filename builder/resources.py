"""Where the shipped data lives (`images/` and `validate/` in a checkout, `builder/_data/` in a
wheel) and what it holds: the probe scripts and the generate probe's variants."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

_PACKAGE = Path(__file__).resolve().parent

# Probe name -> its script in validate/, in the order the probes run.
PROBES: Mapping[str, str] = MappingProxyType(
    {
        "imports": "imports.py",
        "numpy": "numpy.py",
        "pip-check": "pip_check.py",
        "lock-match": "lock_match.py",
        "cuda": "cuda.py",
        "media": "media.py",
        "generate": "generate.py",
        "model-dir": "model_dir.py",
    }
)
# The probe with no script in validate/: it runs the image's own entrypoint and cmd
# (`builder.probe.serve`). Opt-in: it needs options and a command to run.
SERVE_PROBE = "serve"
# The variants validate/generate.py can run (its VARIANTS table; a unit test ties the two).
GENERATE_VARIANTS: tuple[str, ...] = (
    "wan2.1",
    "wan2.2-a14b",
    "wan2.2-ti2v-5b",
    "i2v",
    "multitalk-audio",
)


def data_dir(name: str) -> Path:
    """The directory `name` (`images` or `validate`), installed or from the source tree."""
    installed = _PACKAGE / "_data" / name
    return installed if installed.is_dir() else _PACKAGE.parent / name
