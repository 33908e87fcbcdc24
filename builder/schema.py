"""The JSON Schema of matrix.yaml version 1, for editors (yaml-language-server) and CI linters.

`load_matrix` is the authority (it also checks what a schema cannot: unknown bases, duplicate
ids, empty products); this schema mirrors its shape so editors can complete and flag keys.
"""

from __future__ import annotations

from typing import Any

from builder.matrix import (
    _DURATION,
    _STEP_UNSAFE,
    _USER,
    _WORKDIR,
    BASE_NAME,
    ENV_NAME,
    GPU_MODES,
    MEMORY,
    PROBES,
    PROFILE_NAME,
    STEP_POINTS,
    STEP_SECRETS,
)
from builder.platforms import PLATFORMS
from builder.yamlnodes import UNSAFE

# The loader's own patterns, so the schema cannot drift from it. A string is safe where
# UNSAFE finds nothing in it ([\s\S]: JSON Schema's `.` stops at a newline).
SAFE = rf"^(?![\s\S]*(?:{UNSAFE.pattern}))"
STRINGS = {"type": "array", "items": {"type": "string", "pattern": SAFE}}
VERSION_OR_SPEC = {
    "type": ["string", "number"],
    "description": "2.4.0 or a specifier like >=4.49,<4.52",
}


def _closed(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        out["required"] = required
    return out


def _base() -> dict[str, Any]:
    return _closed(
        {
            "image": {
                "type": "string",
                # Only the characters: the loader parses a reference by distribution's grammar
                # (docker_image), whose regex uses POSIX classes JSON Schema does not have.
                "pattern": r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$",
                "description": "Image reference: tag and/or @sha256: digest.",
            },
            "python": {
                "type": ["string", "number"],
                "description": 'Interpreter version, e.g. "3.10".',
            },
            "cuda": {
                "type": ["string", "number", "null"],
                "description": 'e.g. "12.1"; null for CPU.',
            },
            "platform": {"enum": list(PLATFORMS), "default": "linux/amd64"},
            "apt": {**STRINGS, "description": "Debian/Ubuntu packages added to the image."},
            "preinstalled": {**STRINGS, "description": "name==version the base already carries."},
        },
        ["image", "python"],
    )


def _cell_entry() -> dict[str, Any]:
    return {
        "type": "object",
        "minProperties": 1,
        "additionalProperties": {"type": ["string", "number"]},
        "description": "A partial cell: base and/or distribution pins.",
    }


def _indexes() -> dict[str, Any]:
    extra = {
        "oneOf": [
            {"type": "string", "format": "uri"},
            _closed(
                {
                    "url": {"type": "string", "format": "uri"},
                    "cuda": {
                        "type": ["string", "number", "null", "array"],
                        "description": "The CUDA version(s) this index serves; null for CPU.",
                    },
                },
                ["url"],
            ),
        ]
    }
    return _closed(
        {
            "index_url": {"type": "string", "format": "uri"},
            "extra_index_urls": {"type": "array", "items": extra},
            "wheelhouse": {
                **STRINGS,
                "description": "Local directories of wheels (relative to the matrix).",
            },
            "ca_bundle": {
                "type": ["string", "null"],
                "description": "Extra CA bundle for TLS-intercepting proxies; a BuildKit secret.",
            },
        }
    )


def _image_section() -> dict[str, Any]:
    argv = {**STRINGS, "minItems": 1}
    return _closed(
        {
            "env": {
                "type": "object",
                "propertyNames": {"pattern": ENV_NAME.pattern},
                "additionalProperties": {"type": ["string", "number", "boolean"], "pattern": SAFE},
                "description": "Environment of the final image; values are literal.",
            },
            "workdir": {"type": "string", "pattern": _WORKDIR.pattern},
            "entrypoint": {**argv, "description": "Exec form, as a list."},
            "cmd": {**argv, "description": "Exec form, as a list."},
            "expose": {
                "type": "array",
                "items": {"type": "integer", "minimum": 1, "maximum": 65535},
            },
            "user": {
                "type": "string",
                "pattern": _USER.pattern,
                "not": {"const": "root"},
                "description": "A non-root system user made in the final stage; owns workdir.",
            },
            "healthcheck": _closed(
                {
                    "cmd": argv,
                    "interval": {"type": "string", "pattern": _DURATION.pattern},
                    "timeout": {"type": "string", "pattern": _DURATION.pattern},
                    "retries": {"type": "integer", "minimum": 1, "maximum": 1000},
                },
                ["cmd"],
            ),
        }
    )


def _step() -> dict[str, Any]:
    return _closed(
        {
            "name": {"type": "string", "pattern": BASE_NAME.pattern},
            "at": {"enum": list(STEP_POINTS)},
            "run": {
                "type": "string",
                "pattern": rf"^(?![\s\S]*(?:{_STEP_UNSAFE.pattern}))\S",
                "description": "One line of shell, run as root at that point of the build.",
            },
            "secrets": {"type": "array", "items": {"enum": list(STEP_SECRETS)}},
        },
        ["name", "at", "run"],
    )


def matrix_schema() -> dict[str, Any]:
    """The schema as a JSON-ready dict (draft 2020-12)."""
    probe_options = {
        "type": ["object", "null"],
        "properties": {
            "timeout": {"type": "number", "exclusiveMinimum": 0},
            "memory": {"type": "string", "pattern": MEMORY.pattern},
        },
    }
    schema = _closed(
        {
            "version": {"const": 1},
            "bases": {
                "type": "object",
                "minProperties": 1,
                "additionalProperties": _base(),
                "propertyNames": {"pattern": BASE_NAME.pattern},
            },
            "axes": {
                "type": "object",
                "minProperties": 1,
                "additionalProperties": {"type": "array", "minItems": 1, "items": VERSION_OR_SPEC},
                "properties": {
                    "base": {"type": "array", "minItems": 1, "items": {"type": "string"}}
                },
            },
            "exclude": {"type": "array", "items": _cell_entry()},
            "include": {"type": "array", "items": _cell_entry()},
            "requirements": {**STRINGS, "description": "PEP 508 lines shared by every cell."},
            "indexes": _indexes(),
            "profiles": {
                "type": "array",
                "items": {"type": "string", "pattern": PROFILE_NAME.pattern},
            },
            "profile_paths": STRINGS,
            "probes": {
                "oneOf": [
                    {"type": "array", "items": {"enum": list(PROBES)}},
                    {
                        "type": "object",
                        "propertyNames": {"enum": list(PROBES)},
                        "additionalProperties": probe_options,
                    },
                ]
            },
            "gpu": {"enum": list(GPU_MODES), "default": "optional"},
            "image": _image_section(),
            "steps": {"type": "array", "items": _step()},
            "app": {
                **_closed(
                    {
                        "path": {"type": "string"},
                        "git": _closed(
                            {
                                "url": {"type": "string", "pattern": "^(https|file)://"},
                                "rev": {"type": "string", "pattern": "^[0-9a-fA-F]{40}$"},
                            },
                            ["url", "rev"],
                        ),
                        "files": {"type": "array", "items": {"type": "string"}},
                        "entry_modules": STRINGS,
                    }
                ),
                "oneOf": [{"required": ["path"]}, {"required": ["git"]}],
            },
            "registry": {"type": "string", "description": "Image repository for tags and --push."},
            "runners": _closed({"cpu": {"type": "string"}, "gpu": {"type": "string"}}),
        },
        ["version", "bases", "axes"],
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/builder/builder/matrix.schema.json",
        "title": "builder matrix.yaml (version 1)",
        **schema,
    }
