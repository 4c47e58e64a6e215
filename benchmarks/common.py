"""What the reference scripts share: their arguments, the preloaded training set, the report."""

import argparse
import json

import numpy as np

from mnist_bp.data.datadir import load_dataset


def training_set(description: str):
    """(args, x `(N, 784)` float32 in [0, 1], y `(N,)` int64) of cached Fashion-MNIST."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()
    train = load_dataset("fashion-mnist", args.data_dir, fetch=False).train
    x = np.asarray(train.images, np.float32).reshape(-1, 784) / 255
    return args, x, np.asarray(train.labels, np.int64)


def report(epoch_seconds: list[float], **extra) -> None:
    """One JSON line on stdout, read by bench.py."""
    print(json.dumps({"epoch_seconds": epoch_seconds, **extra}))
