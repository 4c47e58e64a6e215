"""The fast cache beside a dataset's IDX files: parsed once into `cache/*.npy`, read back in
one bounded read afterwards, rebuilt when the source files change, written atomically, never
pickled.

Data you can trust: the manifest records the SHA-256 of each cached array and of each IDX
file it was built from. Every load checks the arrays' hashes (26 ms for Fashion-MNIST's 55 MB
on one core: a few percent of an `evaluate`), so bytes changed in place after they were
verified are never scored: the cache is rebuilt from the IDX files, and an IDX file whose
bytes changed while its size and time stayed is one line naming it and the fix.

Images stay uint8 `(N, 28, 28)` until a batch is taken; conversion to float32 happens per
batch in `batches.py`.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_bp import limits
from mnist_bp.data import idx
from mnist_bp.data.registry import FILENAMES, ROLES
from mnist_bp.errors import UserError
from mnist_bp.fsutil import atomic_write, locked

CACHE_VERSION = 2  # 2: SHA-256 of every array and source file


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
    """The dataset's files that are not there; one that is there but is no regular file (a
    FIFO, a device, a folder) is a UserError naming it, not a reason to download."""
    return [name for name in FILENAMES.values()
            if limits.regular_size(folder / name) is None]


def _fix(folder: Path) -> str:
    return (f"run `mnist-bp download --dataset {folder.name} --force --data-dir {folder.parent}`"
            " (or import good files with --from DIR)")


def _source_stamp(folder: Path) -> dict:
    stamp = {}
    for name in FILENAMES.values():
        st = (folder / name).stat()
        stamp[name] = [st.st_size, st.st_mtime_ns]
    return stamp


def sha256_of(array_or_path) -> str:
    """SHA-256 of an array's bytes (a memory map is read through), or of a file's."""
    if isinstance(array_or_path, np.ndarray):
        return hashlib.sha256(memoryview(np.ascontiguousarray(array_or_path)).cast("B")
                              ).hexdigest()
    digest = hashlib.sha256()
    with open(array_or_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def _manifest(folder: Path) -> dict | None:
    try:
        manifest = json.loads(limits.read_bounded(_cache_dir(folder) / "manifest.json",
                                                  1 << 20, "cache manifest"))
    except (OSError, ValueError, UserError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _read_cache(folder: Path, log=None) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when there is no usable cache: absent, of another version,
    built from other source files, or holding bytes other than those it was written with."""
    cache = _cache_dir(folder)
    manifest = _manifest(folder)
    try:
        if manifest is None or manifest.get("version") != CACHE_VERSION:
            return None
        sources = {name: v[:2] for name, v in manifest["sources"].items()}
        if sources != _source_stamp(folder):
            return None
        # read into memory, each file bounded and checked as opened: the bytes hashed below
        # are the bytes scored (a memory map could change between the two)
        arrays = {role: np.load(io.BytesIO(limits.read_bounded(
            cache / f"{role}.npy", limits.IDX_BYTES, "cache file")), allow_pickle=False)
            for role in ROLES}
        for role, array in arrays.items():
            if array.dtype != np.uint8 or list(array.shape) != manifest["shapes"][role]:
                return None
            if sha256_of(array) != manifest["sha256"][role]:
                if log:
                    log(f"{cache / f'{role}.npy'}: its bytes changed since the cache was "
                        f"written; rebuilding the cache from the IDX files")
                return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, UserError):
        return None
    return arrays


def _check_sources(folder: Path, log=None) -> dict:
    """{file name: [size, mtime_ns, sha256]} of the IDX files (each read bounded, its size
    checked before a byte is hashed); an IDX file whose size and time are those recorded
    when the cache was built but whose bytes are not was changed in place after it was
    verified: one line naming it. One changed openly (a new time) is said, then used."""
    old = (_manifest(folder) or {}).get("sources", {})
    stamp = _source_stamp(folder)
    for name, (size, mtime) in stamp.items():
        digest = hashlib.sha256(limits.read_bounded(folder / name, limits.IDX_BYTES,
                                                    "IDX file", _fix(folder))).hexdigest()
        before = old.get(name) if isinstance(old, dict) else None
        if isinstance(before, list) and len(before) == 3 and before[2] != digest:
            if before[:2] == [size, mtime]:
                raise UserError(f"{folder / name}: its bytes changed after it was verified "
                                f"(same size and time, other content); {_fix(folder)}")
            if log:
                log(f"{folder / name}: other bytes than when the cache was built; its "
                    f"data is used as it is now")
        stamp[name].append(digest)
    return stamp


def write_cache(folder: Path, arrays: dict[str, np.ndarray], sources: dict | None = None
                ) -> None:
    cache = _cache_dir(folder)
    sources = sources or _check_sources(folder)
    for role, array in arrays.items():
        with atomic_write(cache / f"{role}.npy") as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)
    manifest = {"version": CACHE_VERSION, "sources": sources,
                "shapes": {role: list(a.shape) for role, a in arrays.items()},
                "sha256": {role: sha256_of(a) for role, a in arrays.items()}}
    # The manifest goes last: until it is in place the cache counts as absent.
    with atomic_write(cache / "manifest.json", "w") as f:
        json.dump(manifest, f, indent=1)


def load_cached(folder: Path, log=None) -> Dataset:
    """The dataset in `folder`, from the `.npy` cache (rebuilt when the sources changed),
    read into memory and checked against its SHA-256."""
    arrays = _read_cache(folder, log)
    if arrays is None:
        with locked(folder):
            arrays = _read_cache(folder)
            if arrays is None:
                sources = _check_sources(folder, log)  # before parsing: changed bytes refused
                if log:
                    log(f"parsing {folder.name} IDX files into the cache at {_cache_dir(folder)}")
                write_cache(folder, parse_sources(folder), sources)
                arrays = _read_cache(folder)
        if arrays is None:
            raise UserError(f"{_cache_dir(folder)}: cache could not be read back; delete that "
                            "folder and try again")
    return Dataset(
        folder.name,
        Split(arrays["train_images"], arrays["train_labels"]),
        Split(arrays["test_images"], arrays["test_labels"]),
    )
