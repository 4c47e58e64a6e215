"""The data dir: where it is, loading a dataset from it (fetching it first when files are
missing), and validation splits held out of the training files.
"""

from __future__ import annotations

import os
from pathlib import Path

from mnist_bp.data.cache import Dataset, Split, load_cached, missing_files
from mnist_bp.data.download import download_dataset
from mnist_bp.data.registry import get_dataset
from mnist_bp.errors import UserError


def resolve_data_dir(data_dir: Path | str | None = None) -> Path:
    """--data-dir, else $MNIST_BP_DATA_DIR, else $XDG_CACHE_HOME/mnist-bp, else
    ~/.cache/mnist-bp."""
    if data_dir:
        return Path(data_dir).expanduser()
    if os.environ.get("MNIST_BP_DATA_DIR"):
        return Path(os.environ["MNIST_BP_DATA_DIR"]).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home).expanduser() / "mnist-bp"


def load_dataset(name: str, data_dir: Path | str | None = None, *, fetch: bool = True,
                 log=None) -> Dataset:
    """Load `name` from the data dir, downloading it first when files are missing; read into
    memory and checked against the cache's SHA-256 (cache.py)."""
    spec = get_dataset(name)
    folder = resolve_data_dir(data_dir) / name
    if missing_files(folder):
        if not fetch:
            raise UserError(f"{folder}: {name} is not downloaded; run "
                            f"`mnist-bp download --dataset {name}`")
        download_dataset(spec, folder.parent, log=log or (lambda *_: None),
                         show_progress=log is not None)
    return load_cached(folder, log=log)


def split_validation(train: Split, validation: int) -> tuple[Split, Split | None]:
    """Hold the last `validation` training images out; they never reach the optimizer."""
    if validation <= 0:
        return train, None
    if validation >= len(train):
        raise UserError(f"data.validation: {validation} leaves no training images (the set has "
                        f"{len(train)}); choose a number below {len(train)}")
    cut = len(train) - validation
    return (Split(train.images[:cut], train.labels[:cut]),
            Split(train.images[cut:], train.labels[cut:]))
