"""Checkpoints: one `.npz` per save, readable with `np.load(path, allow_pickle=False)`.

Entries:
- `layers.<i>.W`, `layers.<i>.b`: the parameters, one named array each;
- `optimizer.<param>.<state>`: the optimizer's per-parameter state (velocity, m, v);
- `meta`: a JSON string with the format version, the resolved config, the epoch/step
  counters, the optimizer step count, the best metric, the metrics history and the input
  normalisation. Random streams are keyed by (seed, purpose, epoch, step) (see mnist_bp/rng.py), so
  the counters are all they need to continue exactly.
Written to a temporary file, fsynced, then renamed into place.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from mnist_bp import limits
from mnist_bp.config import from_dict
from mnist_bp.errors import UserError
from mnist_bp.fsutil import atomic_write

FORMAT = "mnist-bp-checkpoint"
VERSION = 1
OPTIM_PREFIX = "optimizer."


class CheckpointError(UserError):
    pass


def save(path: Path, params: dict[str, np.ndarray], optimizer_state: dict[str, np.ndarray],
         meta: dict) -> None:
    with atomic_write(path) as f:
        write(f, params, optimizer_state, meta)


def write(f, params: dict[str, np.ndarray], optimizer_state: dict[str, np.ndarray],
          meta: dict) -> None:
    """The checkpoint into an open binary file (a run's files go through rundir.Owned)."""
    meta = {"format": FORMAT, "version": VERSION, **meta}
    arrays = dict(params)
    arrays.update({OPTIM_PREFIX + k: v for k, v in optimizer_state.items()})
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(f, **arrays)


# Limits checked from the zip directory and each array's .npy header, before anything is
# decompressed or allocated: a checkpoint from elsewhere cannot make us read gigabytes.
MAX_ENTRIES = limits.CHECKPOINT_ENTRIES  # (limits.py says why each value)
MAX_ARRAY_BYTES = limits.CHECKPOINT_ARRAY_BYTES
MAX_TOTAL_BYTES = limits.CHECKPOINT_TOTAL_BYTES
MAX_META_CHARS = limits.CHECKPOINT_META_CHARS
MAX_WEIGHT = limits.WEIGHT_MAGNITUDE


def _inspect(path, fix: str, data=None) -> None:
    """Refuse a checkpoint whose directory or array headers declare too much, or lie."""
    from numpy.lib import format as npy

    with zipfile.ZipFile(data if data is not None else path) as zf:
        infos = zf.infolist()
        if len(infos) > MAX_ENTRIES:
            raise CheckpointError(f"{path}: {len(infos):,} entries is more than a checkpoint "
                                  f"has; {fix}")
        total = 0
        for info in infos:
            name = info.filename
            if not name.endswith(".npy") or info.file_size > MAX_ARRAY_BYTES:
                raise CheckpointError(f"{path}: entry {name[:80]!r} is not an array of a "
                                      f"reasonable size; {fix}")
            total += info.file_size
            if total > MAX_TOTAL_BYTES:
                raise CheckpointError(f"{path}: its arrays would take more than "
                                      f"{MAX_TOTAL_BYTES >> 30} GB; {fix}")
            with zf.open(info) as f:
                version = npy.read_magic(f)
                read = npy.read_array_header_1_0 if version == (1, 0) else \
                    npy.read_array_header_2_0
                shape, _, dtype = read(f)
            size = int(np.prod([int(d) for d in shape], dtype=object)) * dtype.itemsize
            entry = name[:-4]
            wanted = "U" if entry == "meta" else "f"
            if dtype.kind != wanted or dtype.hasobject:
                raise CheckpointError(f"{path}: '{entry[:80]}' holds {dtype} values, not "
                                      f"{'a JSON string' if wanted == 'U' else 'floats'}; {fix}")
            if size > info.file_size:
                raise CheckpointError(f"{path}: '{entry[:80]}' declares a shape {shape} larger "
                                      f"than its data (truncated or forged); {fix}")


def load(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    """(params, optimizer state, meta) from `path`, or a CheckpointError naming it.

    Every size is checked before it is read (`_inspect`), arrays must be finite floats, and
    meta a JSON object with the format's fields; no pickle is ever loaded."""
    path = Path(path)
    fix = "pass a checkpoint written by `mnist-bp train` (RUN/checkpoints/last.npz or best.npz)"
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found; {fix}")
    try:  # read once, bounded, from the open file: what is checked is what is loaded
        data = io.BytesIO(limits.read_bounded(path, MAX_TOTAL_BYTES, "checkpoint", fix))
    except limits.UserError as exc:
        raise CheckpointError(str(exc)) from None
    try:
        _inspect(path, fix, data)
        data.seek(0)
        with np.load(data, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except CheckpointError:
        raise
    except MemoryError:
        raise CheckpointError(f"{path}: too large to load; {fix}") from None
    except Exception as exc:  # zip, npy or I/O damage of any kind
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt: "
                              f"{type(exc).__name__}); {fix}") from None
    if "meta" not in arrays:
        raise CheckpointError(f"{path}: has no 'meta' entry, so it is not an mnist-bp "
                              f"checkpoint; {fix}")
    meta_array = arrays.pop("meta")
    if meta_array.shape != () or meta_array.dtype.itemsize // 4 > MAX_META_CHARS:
        raise CheckpointError(f"{path}: its 'meta' entry is not one JSON string; {fix}")
    try:
        meta = json.loads(str(meta_array))
    except (json.JSONDecodeError, RecursionError):
        raise CheckpointError(f"{path}: its 'meta' entry is not valid JSON; {fix}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an mnist-bp checkpoint; {fix}")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {str(meta.get('version'))[:20]}"
                              f" is not supported (this mnist-bp reads version {VERSION}); "
                              f"retrain with this version")
    _check_meta(path, meta, fix)
    for name, array in arrays.items():
        if not np.isfinite(array).all():
            raise CheckpointError(f"{path}: '{name[:80]}' holds NaN or infinite values (a "
                                  f"diverged run?); use an earlier checkpoint")
        if not name.startswith(OPTIM_PREFIX) and array.size and np.abs(array).max() > MAX_WEIGHT:
            raise CheckpointError(f"{path}: '{name[:80]}' holds values beyond +-{MAX_WEIGHT:g}, "
                                  f"which no trained network has; use an earlier checkpoint")
    optim = {k[len(OPTIM_PREFIX):]: v for k, v in arrays.items() if k.startswith(OPTIM_PREFIX)}
    params = {k: v for k, v in arrays.items() if not k.startswith(OPTIM_PREFIX)}
    return params, optim, meta


def _count(value) -> bool:
    return type(value) is int and 0 <= value <= 1 << 40


def _number(value) -> bool:
    """A finite int or float (not a bool)."""
    return type(value) in (int, float) and bool(np.isfinite(value))


def _optional(check):
    return lambda value: value is None or check(value)


# The training progress a checkpoint carries (training.RunState), field by field.
PROGRESS = {
    "epoch": _count, "step_in_epoch": _count, "global_step": _count,
    "best_value": _optional(_number),
    "best_epoch": _optional(_count), "epochs_since_best": _count,
    "history": lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v),
    "partial": lambda v: isinstance(v, dict) and all(_number(x) for x in v.values()),
    "finished": lambda v: isinstance(v, bool),
    "stop_reason": _optional(lambda v: isinstance(v, str)),
    "products": _optional(lambda v: isinstance(v, str) and len(v) <= 40),
}


def _check_meta(path: Path, meta: dict, fix: str) -> None:
    """The fields every command reads, with the types they need."""
    norm = meta.get("normalization")
    if not (isinstance(norm, dict) and set(norm) == {"mean", "std", "per_image"}
            and _number(norm["mean"]) and _number(norm["std"]) and abs(norm["mean"]) <= 1e3
            and 1e-6 <= norm["std"] <= 1e3 and isinstance(norm["per_image"], bool)):
        raise CheckpointError(f"{path}: its input normalisation is missing or invalid; {fix}")
    progress = meta.get("progress")
    if not (isinstance(progress, dict) and all(check(progress.get(key))
                                               for key, check in PROGRESS.items()
                                               if key in progress or key == "epoch")):
        raise CheckpointError(f"{path}: its training progress is missing or invalid; {fix}")
    if not _count(meta.get("optimizer_steps", 0)):
        raise CheckpointError(f"{path}: its optimizer step count is invalid; {fix}")
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{path}: its meta holds no config; {fix}")


def check_shapes(path, expected: dict, found: dict[str, np.ndarray],
                 what: str = "parameter") -> None:
    """Every expected array (or shape tuple) present with the same shape, nothing extra."""
    for name, array in expected.items():
        shape = tuple(getattr(array, "shape", array))
        if name not in found:
            raise CheckpointError(f"{path}: {what} '{name}' is missing; the checkpoint does not "
                                  f"fit its config (use a checkpoint from the same run)")
        if found[name].shape != shape:
            raise CheckpointError(f"{path}: {what} '{name}' has shape {found[name].shape} but "
                                  f"the model needs {shape}; use a checkpoint from the "
                                  f"same run")
    extra = sorted(set(found) - set(expected))
    if extra:
        raise CheckpointError(f"{path}: unexpected {what} '{extra[0][:80]}' for this model; use a "
                              f"checkpoint from the same run")


def config_of(path, meta: dict):
    """The checkpoint's resolved config as a Config (its sizes within the config limits), or
    a CheckpointError naming the file."""
    config = meta.get("config")
    try:
        return from_dict(config)
    except UserError as exc:
        raise CheckpointError(f"{path}: its config is invalid ({exc}); pass a checkpoint "
                              f"written by `mnist-bp train`") from None
