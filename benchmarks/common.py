"""What the reference scripts share: their arguments, the preloaded training set, the report.

The training set is read straight from Fashion-MNIST's gzip IDX files with numpy, the way a
standalone script would: the references import nothing of mnist-bp's, so nothing of ours
(the .npy cache, its memory mapping, our imports) can slow them down.
"""

import argparse
import gzip
import json
from pathlib import Path

import numpy as np


def read_idx(path: Path, header: int) -> np.ndarray:
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), np.uint8, offset=header)


def training_set(description: str, extra=None):
    """(args, x `(N, 784)` float32 in [0, 1], y `(N,)` int64) of Fashion-MNIST in
    DATA_DIR/fashion-mnist. `extra(parser)` may add arguments."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--batch", type=int, default=128)
    if extra:
        extra(ap)
    args = ap.parse_args()
    folder = Path(args.data_dir) / "fashion-mnist"
    x = read_idx(folder / "train-images-idx3-ubyte.gz", 16).reshape(-1, 784)
    y = read_idx(folder / "train-labels-idx1-ubyte.gz", 8)
    return args, x.astype(np.float32) / 255, y.astype(np.int64)


def report(epoch_seconds: list[float], **extra) -> None:
    """One JSON line on stdout, read by bench.py."""
    print(json.dumps({"epoch_seconds": epoch_seconds, **extra}))
