"""`builder scan`: what a model repository really needs, found statically (no code runs).

The stages, one module each: `walk` follows the local imports from the entry files (`parse`
reads one file: its imports with their reach, and the CUDA calls evaluated at import time);
`requirements` reads the requirements files by pip's rules; `resolve` resolves them with uv for
the target Python and platform, the dependency graph coming from uv's `# via` notes; `wheels`
reads which import names each resolved distribution provides from its wheel's file list
(`names` turns file lists into import names, and holds the guesses for the rest); `run` puts
them together into a `model.ScanReport`; `text` and `draft` render it. The running
interpreter's installed packages decide nothing: only its standard-library names are used.

Reach, strongest first: `module` (runs when the entries are imported), `lazy` (inside a
function, or through a module imported inside one), `optional` (under a try that catches
ImportError), `guarded` (under `if TYPE_CHECKING:`, or in a version or platform branch the
target does not take). A path is as strong as its weakest import, and an import's reach is its
strongest path from the entries.

`--format json` prints one object:

    {
      "path": str,                                 # PATH as given
      "python": {"target": "3.11", "platform": "linux/amd64", "stdlib_names_from": "3.11"},
      "entries": [str],                            # relative to PATH, like every "file" below
      "files": [str],                              # local .py files reached, sorted
      "local": [{"name": str, "path": str, "kind": "package" | "module",
                 "namespace": bool,                # a directory without __init__.py
                 "files": int}],                   # the local top-level names reached
      "stdlib": [str],                             # top-level standard-library modules, sorted
      "third_party": [{
        "import": str,                             # top-level name, or a dotted one
        "distributions": [str],                    # canonical names; several = ambiguous
        "ambiguous": bool,
        "source": "wheel" | "table" | "name",      # a resolved wheel's files, or a guess
        "guessed": bool,                           # source is not "wheel"
        "reach": "module" | "lazy" | "optional" | "guarded",   # the strongest
        "locations": [{"file": str, "line": int, "reach": str}]
      }],
      "missing_local": [{"file": str, "line": int, "module": str, "reason": str, "reach": str}],
      "gpu_at_import": [{"file": str, "line": int, "call": str,
                         "context": "module level" | "default argument" | "class body"
                                    | "decorator",
                         "reach": str}],           # the reach of the file
      "syntax_errors": [{"file": str, "line": int, "message": str}],
      "notes": [{"level": "info" | "warning", "message": str}],
      "requirements": null | {                     # null without --requirements
        "files": [str],
        "declared": [str],                         # PEP 508, those for the target
        "resolution": {"ok": bool, "packages": int, "origin": "uv" | "cache" | "none",
                       "python": str, "platform": str, "error": str | null,
                       "dropped": [{"requirement": str, "reason": str}]},
        "undeclared": {"required" | "lazy" | "optional" | "guarded":
                       [{"import": str, "distributions": [str], "guessed": bool}]},
        "transitive": [{"import": str, "distribution": str,
                        "via": str, "path": [str]}],   # declared -> ... -> distribution
        "unused": [str]                            # declared, never imported
      },
      "exit_code": 0 | 1
    }

Exit code 1 when a local module is missing (not behind an import guard), or when an import
reached at module level is not declared and does not arrive transitively (with
--requirements); bad input raises `InputError` (exit code 2).
"""

from __future__ import annotations

from builder.scan.draft import profile_name, render_profile_draft, write_profile_draft
from builder.scan.model import Reach, ScanReport, ThirdParty
from builder.scan.names import KNOWN_DISTRIBUTIONS, distributions_for, wheel_modules
from builder.scan.requirements import read_declared, read_indexes, read_requirements
from builder.scan.resolve import Graph, Resolved, UvResolver, parse_resolution
from builder.scan.run import (
    DEFAULT_PLATFORM,
    Environment,
    ScanOptions,
    Sources,
    current_environment,
    render,
    run_scan,
    scan,
    uv_sources,
)
from builder.scan.text import render_text
from builder.scan.wheels import WheelModules

__all__ = [
    "DEFAULT_PLATFORM",
    "KNOWN_DISTRIBUTIONS",
    "Environment",
    "Graph",
    "Reach",
    "Resolved",
    "ScanOptions",
    "ScanReport",
    "Sources",
    "ThirdParty",
    "UvResolver",
    "WheelModules",
    "current_environment",
    "distributions_for",
    "parse_resolution",
    "profile_name",
    "read_declared",
    "read_indexes",
    "read_requirements",
    "render",
    "render_profile_draft",
    "render_text",
    "run_scan",
    "scan",
    "uv_sources",
    "wheel_modules",
    "write_profile_draft",
]
