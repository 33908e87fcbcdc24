"""The JSON Schema of matrix.yaml version 1, for editors (yaml-language-server) and CI linters.

`load_matrix` is the authority (it also checks what a schema cannot: unknown bases, duplicate
ids, empty products); this schema mirrors its shape so editors can complete and flag keys.
"""

from __future__ import annotations

from typing import Any

from builder.matrix import (
    _DRIVER,
    _DURATION,
    _STEP_UNSAFE,
    _USER,
    _WORKDIR,
    BASE_NAME,
    ENV_NAME,
    GPU_MODES,
    HTTP_METHODS,
    MEMORY,
    PROBE_NAMES,
    PROBES,
    PROFILE_NAME,
    RAW_SM,
    SERVE_MODES,
    STEP_POINTS,
    STEP_SECRETS,
    load_gpu_table,
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
            "preinstalled": {
                "oneOf": [STRINGS, {"const": "auto"}],
                "description": "name==version the base already carries, or auto: read from "
                "the base image with the engine.",
            },
            "reuse_preinstalled": {
                "type": "boolean",
                "default": False,
                "description": "The venv sees the base's packages; the lock pins them "
                "(# from base) and never installs them again.",
            },
            "fleet": {**_fleet(), "description": "Narrows the matrix's fleet for this base."},
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


def _fleet() -> dict[str, Any]:
    """`fleet`: GPU names from builder/data/gpus.yaml or raw sm_XY, and the oldest driver."""
    gpu = {
        "anyOf": [{"enum": sorted(load_gpu_table())}, {"type": "string", "pattern": RAW_SM.pattern}]
    }
    return _closed(
        {
            "gpus": {"type": "array", "minItems": 1, "uniqueItems": True, "items": gpu},
            "driver": {
                "type": "string",
                "pattern": _DRIVER.pattern,
                "description": 'The oldest NVIDIA driver the fleet runs, e.g. "550.54.15".',
            },
        }
    ) | {
        "description": "The GPUs the images will land on; `builder check` and the cuda probe "
        "judge each cell's kernels and CUDA against them."
    }


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


LIMITS = {
    "timeout": {"type": "number", "exclusiveMinimum": 0},
    "memory": {"type": "string", "pattern": MEMORY.pattern},
}
HTTP_URL = {"type": "string", "pattern": "^https?://"}


def _serve() -> dict[str, Any]:
    """`probes.serve`: the image's own command, in one of three modes."""
    request = {
        "method": {"enum": list(HTTP_METHODS)},
        "path": {"type": "string", "pattern": "^/"},
        "url": HTTP_URL,
        "json": {"description": "A JSON body (the method is then POST unless given)."},
    }
    expect = {
        "status": {"type": "integer", "minimum": 100, "maximum": 599, "default": 200},
        "keys": {**STRINGS, "description": "Top-level keys the JSON answer must have."},
        "exit_code": {"type": "integer", "minimum": 0, "maximum": 255, "default": 0},
        "output": {"type": "string", "description": "A regex stdout or stderr must match."},
    }
    modes = {"http": "url", "command": "argv"}
    return {
        **_closed(
            {
                "mode": {"enum": list(SERVE_MODES)},
                **LIMITS,
                "input": {
                    "type": "object",
                    "required": ["input"],
                    "description": "runpod: the job for --test_input (default: the app's "
                    "test_input.json).",
                },
                "url": {**HTTP_URL, "description": "http: polled until it answers below 500."},
                "request": _closed(request),
                "expect": _closed(expect),
                "argv": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            },
            ["mode"],
        ),
        "allOf": [
            {"if": {"properties": {"mode": {"const": m}}}, "then": {"required": [key]}}
            for m, key in modes.items()
        ],
        "description": "Runs the image's own entrypoint and cmd (runpod: with --test_input; "
        "http: polled from inside the container) or `argv` (command).",
    }


def matrix_schema() -> dict[str, Any]:
    """The schema as a JSON-ready dict (draft 2020-12)."""
    probe_options = {"type": ["object", "null"], "properties": LIMITS}
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
            "requirements": {
                **STRINGS,
                "description": "PEP 508 lines shared by every cell, or `-r FILE` / `-c FILE`: "
                "a requirements or constraints file (relative to the matrix), read by pip's rules.",
            },
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
                        "propertyNames": {"enum": list(PROBE_NAMES)},
                        "properties": {"serve": _serve()},
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
            "fleet": _fleet(),
        },
        ["version", "bases", "axes"],
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/builder/builder/matrix.schema.json",
        "title": "builder matrix.yaml (version 1)",
        **schema,
    }
