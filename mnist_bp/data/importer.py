"""`mnist-bp download --from DIR`: importing the four files from a local folder, no network.

Every file is validated (IDX structure, label range, image/label counts) before anything is
written; each is then compared with its official checksum, and the result is reported.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np

from mnist_bp.data import idx
from mnist_bp.data.cache import read_files, write_cache
from mnist_bp.data.download import file_digest
from mnist_bp.data.registry import ROLES, DatasetSpec
from mnist_bp.errors import UserError
from mnist_bp.fsutil import atomic_write, locked


def _find_source(source: Path, filename: str) -> Path:
    for candidate in (source / filename, source / filename[: -len(".gz")]):
        if candidate.is_file():
            return candidate
    raise UserError(f"{source}: no {filename} (or uncompressed {filename[:-3]}) there; put the "
                    f"four MNIST-format files in that folder")


def import_from(spec: DatasetSpec, source: Path, data_dir: Path, log=print,
                force: bool = False) -> list[dict]:
    """Copy the four files from `source` after validating all of them; report checksums.

    Nothing is written unless every file is valid IDX data and the counts agree, and files
    already in the data dir that hold other data are replaced only with `force`. Returns one
    dict per file: `file`, `source`, `count`, `matches_official`.
    """
    source = Path(source)
    if not source.is_dir():
        raise UserError(f"{source}: not a folder; give --from the folder holding the four files")
    fix = "replace that file with a good copy and run the import again"
    paths = {role: _find_source(source, spec.files[role].filename) for role in ROLES}
    arrays = read_files(paths, fix)

    folder = Path(data_dir) / spec.name
    reports = []
    with locked(folder):
        if not force:
            _refuse_to_replace(spec, folder, arrays, fix)
        for role, path in paths.items():
            fspec = spec.files[role]
            with open(path, "rb") as src:
                compressed = src.read(2) == idx.GZIP_MAGIC
            matches = compressed and file_digest(path, fspec.algorithm) == fspec.checksum
            with atomic_write(folder / fspec.filename) as f:
                if compressed:
                    with open(path, "rb") as src:
                        shutil.copyfileobj(src, f)
                else:
                    f.write(gzip.compress(idx.encode(arrays[role]), compresslevel=6, mtime=0))
            reports.append({"file": fspec.filename, "source": str(path),
                            "count": int(len(arrays[role])), "matches_official": bool(matches),
                            "compressed": compressed})
        write_cache(folder, arrays)
    return reports


def _refuse_to_replace(spec: DatasetSpec, folder: Path, arrays: dict, fix: str) -> None:
    """Files already in the data dir are replaced only when they hold the same data (an
    import run twice) or with --force: a bad copy never silently replaces a good one."""
    present = {role: folder / spec.files[role].filename for role in ROLES
               if (folder / spec.files[role].filename).is_file()}
    if not present:
        return
    try:
        current = {role: (idx.read_images if "images" in role else idx.read_labels)(path, fix)
                   for role, path in present.items()}
    except UserError:
        return  # what is there is unreadable: replacing it loses nothing
    if not all(np.array_equal(current[role], arrays[role]) for role in present):
        raise UserError(f"{folder}: already holds {spec.name} files with other data; pass "
                        f"--force to replace them with the ones from the import")
