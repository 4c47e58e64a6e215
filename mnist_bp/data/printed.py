"""Printed digits shipped with mnist-bp, for `data.printed: true`.

MNIST is handwriting only: a network trained on it alone reads a printed 1 with a flag as 7,
a closed 4 as 9, a narrow 0 as 1. These are the digits of about 300 fonts (plain, outlined
and emboldened strokes, on photographed paper) as `predict` prepares them: the 28x28 inputs
the network sees when a user shows it print. They are made by
`benchmarks/printed_digits.py` from fonts outside the families the held-out sets of
`benchmarks/user_images.py` are read in, and stored in MNIST's IDX format beside this
module, checked by SHA-256 when loaded.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from mnist_bp import limits
from mnist_bp.data import idx
from mnist_bp.data.cache import Split
from mnist_bp.errors import UserError

FOLDER = Path(__file__).parent / "printed"
IMAGES, LABELS = "printed-images-idx3-ubyte.gz", "printed-labels-idx1-ubyte.gz"
SHA256 = {IMAGES: "c548d49178d6e92852ce8dcdbdfc85655f05e9b67fd7dd84bdb606145f8da315",
          LABELS: "09ba03f7902ff729c229bbb8ae7c6babbe9c84d710bc6ba95b604538324d76c2"}
DATASETS = ("mnist",)  # the printed digits are digits: they join digit sets only
FIX = "reinstall mnist-bp (pip install --force-reinstall), or set data.printed: false"


def load_printed(folder: Path = FOLDER) -> Split:
    """The printed digits, checked against the SHA-256 they were shipped with."""
    arrays = []
    for name, read in ((IMAGES, idx.read_images), (LABELS, idx.read_labels)):
        path = folder / name
        if not path.is_file():
            raise UserError(f"{path}: the printed digits are missing; {FIX}")
        data = limits.read_bounded(path, idx.MAX_BYTES, "printed digits file", FIX)
        if hashlib.sha256(data).hexdigest() != SHA256[name]:
            raise UserError(f"{path}: the printed digits are damaged (their SHA-256 differs "
                            f"from the one they were shipped with); {FIX}")
        arrays.append(read(path, FIX))
    idx.check_pair(*arrays, folder / IMAGES, folder / LABELS, FIX)
    return Split(*arrays)


def with_printed(train: Split, folder: Path = FOLDER) -> Split:
    """`train` followed by the printed digits."""
    extra = load_printed(folder)
    return Split(np.concatenate([train.images, extra.images]),
                 np.concatenate([train.labels, extra.labels]))
