"""The fast cache beside a dataset's IDX files: parsed once into `cache/*.npy`, memory-mapped
afterwards, rebuilt when the source files change, written atomically, never pickled.

Images stay uint8 `(N, 28, 28)` until a batch is taken; conversion to float32 happens per
batch in `batches.py`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_bp.data import idx
from mnist_bp.data.registry import FILENAMES, ROLES
from mnist_bp.errors import UserError
from mnist_bp.fsutil import atomic_write, locked

CACHE_VERSION = 1


@dataclass(frozen=True)
class Split:
    """Images `(N, 28, 28)` uint8 and labels `(N,)` uint8."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    test: Split


def missing_files(folder: Path) -> list[str]:
    return [name for name in FILENAMES.values() if not (folder / name).is_file()]


def _fix(folder: Path) -> str:
    return (f"run `mnist-bp download --dataset {folder.name} --force --data-dir {folder.parent}`"
            " (or import good files with --from DIR)")


def _source_stamp(folder: Path) -> dict:
    stamp = {}
    for name in FILENAMES.values():
        st = (folder / name).stat()
        stamp[name] = [st.st_size, st.st_mtime_ns]
    return stamp


def read_files(paths: dict[str, Path], fix: str) -> dict[str, np.ndarray]:
    """Parse and validate four IDX files given by role, and that each split's images and
    labels count the same; `fix` ends every error message."""
    arrays = {}
    for role in ROLES:
        reader = idx.read_images if role.endswith("images") else idx.read_labels
        arrays[role] = reader(paths[role], fix)
    for split in ("train", "test"):
        idx.check_pair(arrays[f"{split}_images"], arrays[f"{split}_labels"],
                       paths[f"{split}_images"], paths[f"{split}_labels"], fix)
    return arrays


def parse_sources(folder: Path) -> dict[str, np.ndarray]:
    """Parse and validate the four IDX files of `folder`, keyed by role."""
    return read_files({role: folder / FILENAMES[role] for role in ROLES}, _fix(folder))


def _cache_dir(folder: Path) -> Path:
    return folder / "cache"


def _read_cache(folder: Path, in_memory: bool = False) -> dict[str, np.ndarray] | None:
    cache = _cache_dir(folder)
    try:
        manifest = json.loads((cache / "manifest.json").read_text())
        stale = manifest.get("sources") != _source_stamp(folder)
        if manifest.get("version") != CACHE_VERSION or stale:
            return None
        arrays = {role: np.load(cache / f"{role}.npy", mmap_mode=None if in_memory else "r",
                                allow_pickle=False)
                  for role in ROLES}
    except (OSError, ValueError, KeyError):
        return None
    for role, array in arrays.items():
        if array.dtype != np.uint8 or list(array.shape) != manifest["shapes"][role]:
            return None
    return arrays


def write_cache(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    cache = _cache_dir(folder)
    stamp = _source_stamp(folder)
    for role, array in arrays.items():
        with atomic_write(cache / f"{role}.npy") as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)
    manifest = {"version": CACHE_VERSION, "sources": stamp,
                "shapes": {role: list(a.shape) for role, a in arrays.items()}}
    # The manifest goes last: until it is in place the cache counts as absent.
    with atomic_write(cache / "manifest.json", "w") as f:
        json.dump(manifest, f, indent=1)


def load_cached(folder: Path, log=None, in_memory: bool = False) -> Dataset:
    """The dataset in `folder`, from the `.npy` cache (rebuilt when the sources changed):
    memory-mapped, or read into RAM with `in_memory` (training, whose random gathers are
    slower from a file mapping)."""
    arrays = _read_cache(folder, in_memory)
    if arrays is None:
        with locked(folder):
            arrays = _read_cache(folder, in_memory)
            if arrays is None:
                if log:
                    log(f"parsing {folder.name} IDX files into the cache at {_cache_dir(folder)}")
                write_cache(folder, parse_sources(folder))
                arrays = _read_cache(folder, in_memory)
        if arrays is None:
            raise UserError(f"{_cache_dir(folder)}: cache could not be read back; delete that "
                            "folder and try again")
    return Dataset(
        folder.name,
        Split(arrays["train_images"], arrays["train_labels"]),
        Split(arrays["test_images"], arrays["test_labels"]),
    )
