"""How long `tune` takes to validate a search space at the size limit (docs/tune.md).

    python benchmarks/space_validation.py

Writes two space files just under config.MAX_FILE_BYTES into a temporary folder, each one
key with a very long list of choices (`model.hidden` lists, the costliest to check, and
learning rates), and times `tune.load_space` on each: reading the YAML and checking every
value.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from mnist_bp.config import MAX_FILE_BYTES
from mnist_bp.tune import load_space


def space_text(key: str, value_of) -> str:
    parts, size, i = [], len(key) + 20, 1
    while size < MAX_FILE_BYTES - 20:
        parts.append(value_of(i))
        size += len(parts[-1]) + 2
        i += 1
    return f"{key}: {{choices: [{', '.join(parts)}]}}\n"


def main():
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    cases = {"model.hidden": lambda i: f"[{i // 700 + 1}, {i % 700 + 1}]",
             "optimizer.learning_rate": lambda i: f"{i * 1e-7:.6g}"}
    with tempfile.TemporaryDirectory() as tmp:
        for key, value_of in cases.items():
            path = Path(tmp) / "space.yaml"
            path.write_text(space_text(key, value_of))
            start = time.perf_counter()
            space = load_space(path, {"data": {"validation": 1000}})
            seconds = time.perf_counter() - start
            print(f"{key}: {len(space[key]['choices']):,} choices, {path.stat().st_size:,} "
                  f"bytes, validated in {seconds:.2f} s")


if __name__ == "__main__":
    main()
