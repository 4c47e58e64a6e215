"""IDX files (the MNIST format): read with full validation, write.

Layout: two zero bytes, a dtype code (0x08 = uint8), the number of dimensions, then each
dimension as a big-endian uint32, then the payload. Files may be gzip-compressed; the reader
looks at the first bytes rather than trusting the file name.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from mnist_bp import limits
from mnist_bp.data.registry import IMAGE_SIDE, NUM_CLASSES
from mnist_bp.errors import UserError

UINT8 = 0x08
GZIP_MAGIC = b"\x1f\x8b"
# Larger files are refused, compressed or not, before or while they are decompressed (a
# gzip bomb expands a few MB into gigabytes): 200,000 images of 28x28 fit easily.
MAX_BYTES = limits.IDX_BYTES
IMAGE_SHAPE = (IMAGE_SIDE, IMAGE_SIDE)


class IdxError(UserError):
    """An IDX file that cannot be used as it is."""


def _fail(path, problem, fix):
    raise IdxError(f"{path}: {problem}; {fix}")


def read_bytes(path: Path, fix: str) -> bytes:
    """The decompressed content of `path` (gzip or raw), at most MAX_BYTES, or an IdxError
    naming the file."""
    try:
        raw = limits.read_bounded(path, MAX_BYTES, "IDX file", fix)
    except UserError as exc:
        raise IdxError(str(exc)) from None
    if not raw:
        _fail(path, "file is empty", fix)
    if raw[:2] != GZIP_MAGIC:
        return raw
    return _gunzip(raw, path, fix)


def _gunzip(raw: bytes, path, fix: str) -> bytes:
    """gzip members one after the other, decompressed to at most MAX_BYTES."""
    out, rest = [], raw
    total = 0
    while rest:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            chunk = inflater.decompress(rest, MAX_BYTES + 1 - total)
        except zlib.error as exc:
            _fail(path, f"gzip data is corrupt ({exc})", fix)
        total += len(chunk)
        if total > MAX_BYTES or inflater.unconsumed_tail:
            _fail(path, f"decompresses to more than {MAX_BYTES:,} bytes (a gzip bomb?)", fix)
        if not inflater.eof:
            _fail(path, "gzip data is truncated", fix)
        out.append(chunk)
        rest = inflater.unused_data
        if rest and rest[:2] != GZIP_MAGIC:
            break  # trailing garbage after the last member, as gzip itself tolerates zeros
    return b"".join(out)


def parse(data: bytes, path, fix: str, ndim: int) -> np.ndarray:
    """Parse IDX bytes holding uint8 data with `ndim` dimensions, validating every field."""
    if len(data) < 4:
        _fail(path, f"too short for an IDX header ({len(data)} bytes)", fix)
    zero, dtype_code, dims = struct.unpack(">HBB", data[:4])
    if zero != 0:
        head = data[:8]
        _fail(path, f"not an IDX file (starts with {head!r})", fix)
    if dtype_code != UINT8:
        _fail(path, f"IDX dtype code 0x{dtype_code:02x} is not uint8 (0x08)", fix)
    if dims != ndim:
        _fail(path, f"has {dims} dimensions where {ndim} were expected", fix)
    header = 4 + 4 * dims
    if len(data) < header:
        _fail(path, "header is truncated", fix)
    shape = struct.unpack(f">{dims}I", data[4:header])
    expected = header + math.prod(shape)  # Python ints: no overflow
    if len(data) != expected:
        what = "shorter" if len(data) < expected else "longer"
        _fail(path, f"payload is {what} than its header says ({len(data)} bytes, "
              f"header says {expected} for shape {shape})", fix)
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_images(path: Path, fix: str) -> np.ndarray:
    """Images as a `(N, 28, 28)` uint8 array."""
    images = parse(read_bytes(path, fix), path, fix, ndim=3)
    if images.shape[1:] != IMAGE_SHAPE:
        _fail(path, f"images are {images.shape[1]}x{images.shape[2]}, not 28x28", fix)
    return images


def read_labels(path: Path, fix: str) -> np.ndarray:
    """Labels as a `(N,)` uint8 array with values in 0..9."""
    labels = parse(read_bytes(path, fix), path, fix, ndim=1)
    if labels.size and labels.max() >= NUM_CLASSES:
        bad = int(labels.max())
        _fail(path, f"label {bad} is out of range 0..{NUM_CLASSES - 1}", fix)
    return labels


def check_pair(images: np.ndarray, labels: np.ndarray, images_path, labels_path, fix: str):
    """Images and labels of one split must count the same."""
    if len(images) != len(labels):
        raise IdxError(f"{images_path} holds {len(images)} images but {labels_path} holds "
                       f"{len(labels)} labels; {fix}")


def encode(array: np.ndarray) -> bytes:
    """IDX bytes for a uint8 array (any number of dimensions)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, UINT8, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write(path: Path, array: np.ndarray, compress: bool | None = None) -> None:
    """Write `array` as IDX to `path`, gzip-compressed when the name ends in .gz."""
    data = encode(array)
    if compress is None:
        compress = str(path).endswith(".gz")
    if compress:
        data = gzip.compress(data, compresslevel=6, mtime=0)
    Path(path).write_bytes(data)
