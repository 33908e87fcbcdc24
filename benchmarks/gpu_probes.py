"""Run the cuda and generate probes through builder's own runner on this host's Python (the venv
engine's path), as on a GPU runner with no Docker. Prints one JSON object with what they saw.
Usage: python benchmarks/gpu_probes.py [CUDA_OF_THE_CELL]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from builder.probe import VenvTarget, run_probe
from builder.resources import data_dir

VARIANTS = ["wan2.1", "wan2.2-a14b", "wan2.2-ti2v-5b", "i2v", "multitalk-audio"]


def main() -> None:
    cuda = sys.argv[1] if len(sys.argv) > 1 else None
    with tempfile.TemporaryDirectory() as tmp:
        target = VenvTarget(Path(sys.executable), Path(tmp), data_dir("validate"), "", None)
        runs = {
            "cuda": {"cuda": cuda, "gpu": "required"},
            "generate": {"variants": VARIANTS, "required_variants": VARIANTS, "memory": "64g"},
        }
        out = {}
        for name, options in runs.items():
            start = time.monotonic()
            result = run_probe(target, name, options).to_json()
            result["wall"] = round(time.monotonic() - start, 2)
            out[name] = result
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
