"""Shared test fixtures: small synthetic MNIST-format data, written as real IDX files."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

# numpy's matmul is the reference every exact number here was computed with; the oneDNN
# paths are tested on purpose (tests/test_products.py, tests/test_resume.py).
# MNIST_BP_TEST_GEMM=onednn runs the whole suite on oneDNN instead (exact numbers then differ).
os.environ["MNIST_BP_GEMM"] = os.environ.get("MNIST_BP_TEST_GEMM", "numpy")

from mnist_bp.data import idx  # noqa: E402
from mnist_bp.data.registry import FILENAMES, ROLES, DatasetSpec, FileSpec  # noqa: E402


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` learnable 28x28 uint8 images: one random blob template per class, plus noise."""
    templates_rng = np.random.default_rng(1234)
    coarse = (templates_rng.random((10, 5, 5)) > 0.6).astype(np.float32)
    templates = np.zeros((10, 28, 28), np.float32)  # 4x4-pixel blocks, a dark border
    templates[:, 4:24, 4:24] = coarse.repeat(4, axis=1).repeat(4, axis=2)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    noise = rng.random((n, 28, 28)) * 0.5
    images = np.clip((templates[labels] * 0.8 + noise * (templates[labels] > 0)) * 255, 0, 255)
    return images.astype(np.uint8), labels


def dataset_arrays(n_train=600, n_test=200, seed=0) -> dict[str, np.ndarray]:
    train_images, train_labels = synthetic_digits(n_train, seed)
    test_images, test_labels = synthetic_digits(n_test, seed + 1)
    return {"train_images": train_images, "train_labels": train_labels,
            "test_images": test_images, "test_labels": test_labels}


def gz_bytes(array: np.ndarray) -> bytes:
    return gzip.compress(idx.encode(array), mtime=0)


def write_dataset(folder: Path, arrays: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for role in ROLES:
        (folder / FILENAMES[role]).write_bytes(gz_bytes(arrays[role]))
    return folder


def spec_for(name: str, blobs: dict[str, bytes], mirrors=()) -> DatasetSpec:
    """A registry entry for test files, with their real SHA-256."""
    files = {role: FileSpec(FILENAMES[role], "sha256", hashlib.sha256(blobs[role]).hexdigest(),
                            len(blobs[role])) for role in ROLES}
    return DatasetSpec(name, files, tuple(mirrors))


@pytest.fixture(scope="session")
def small_arrays():
    return dataset_arrays()


@pytest.fixture
def data_dir(tmp_path, small_arrays) -> Path:
    """A data dir holding a small synthetic 'mnist'."""
    write_dataset(tmp_path / "data" / "mnist", small_arrays)
    return tmp_path / "data"


SMALL_RUN = {"seed": 0, "data": {"validation": 100}, "model": {"hidden": [32]},
             "training": {"epochs": 3, "batch_size": 32},
             "optimizer": {"learning_rate": 0.003}}


def train_small(folder: Path, overrides: dict | None = None, **run_kwargs) -> Path:
    """Train a small MLP on synthetic data in `folder`; returns the run directory."""
    from mnist_bp.config import from_dict
    from mnist_bp.training import run

    data = folder / "data"
    if not (data / "mnist").is_dir():
        write_dataset(data / "mnist", dataset_arrays())
    cfg = {**SMALL_RUN, **(overrides or {})}
    run(from_dict(cfg), folder / "run", data, config_name="small", **run_kwargs)
    return folder / "run"


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """One small finished run (3 epochs, validation split) shared by the tests that read one."""
    return train_small(tmp_path_factory.mktemp("trained"))


def reference_probabilities(checkpoint: Path, images: np.ndarray) -> np.ndarray:
    """`(N, 10)` probabilities of a checkpoint's ReLU/softmax MLP computed here, in float64,
    from the arrays in the file alone: an independent check of what the package computes.
    `images` are uint8 `(N, 28, 28)` or float in [0, 1]."""
    import json

    with np.load(checkpoint, allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta"]))
        layers = sorted({k.split(".")[1] for k in npz.files if k.startswith("layers.")}, key=int)
        weights = [(npz[f"layers.{i}.W"].astype(np.float64), npz[f"layers.{i}.b"].astype(
            np.float64)) for i in layers]
    assert meta["config"]["model"].get("activation", "relu") == "relu"
    x = np.asarray(images, np.float64).reshape(len(images), -1)
    if np.asarray(images).dtype == np.uint8:
        x = x / 255
    norm = meta["normalization"]
    if norm["per_image"]:
        x = x - x.mean(axis=1, keepdims=True)
        x = x / np.maximum(x.std(axis=1, keepdims=True), 1 / 255)
    else:
        x = (x - norm["mean"]) / norm["std"]
    for i, (W, b) in enumerate(weights):
        x = x @ W + b
        if i < len(weights) - 1:
            x = np.maximum(x, 0)
    x -= x.max(axis=1, keepdims=True)
    p = np.exp(x)
    return p / p.sum(axis=1, keepdims=True)
