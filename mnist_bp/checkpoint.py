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

import json
import zipfile
from pathlib import Path

import numpy as np

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
    meta = {"format": FORMAT, "version": VERSION, **meta}
    arrays = dict(params)
    arrays.update({OPTIM_PREFIX + k: v for k, v in optimizer_state.items()})
    arrays["meta"] = np.array(json.dumps(meta))
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def load(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    """(params, optimizer state, meta) from `path`, or a CheckpointError naming it."""
    path = Path(path)
    fix = "pass a checkpoint written by `mnist-bp train` (RUN/checkpoints/last.npz or best.npz)"
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; {fix}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt: "
                              f"{type(exc).__name__}); {fix}") from None
    if "meta" not in arrays:
        raise CheckpointError(f"{path}: has no 'meta' entry, so it is not an mnist-bp "
                              f"checkpoint; {fix}")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: its 'meta' entry is not valid JSON; {fix}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an mnist-bp checkpoint; {fix}")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta.get('version')} is not "
                              f"supported (this mnist-bp reads version {VERSION}); retrain with "
                              f"this version")
    optim = {k[len(OPTIM_PREFIX):]: v for k, v in arrays.items() if k.startswith(OPTIM_PREFIX)}
    params = {k: v for k, v in arrays.items() if not k.startswith(OPTIM_PREFIX)}
    return params, optim, meta


def check_shapes(path, expected: dict[str, np.ndarray], found: dict[str, np.ndarray],
                 what: str = "parameter") -> None:
    """Every expected array present with the same shape, nothing extra."""
    for name, array in expected.items():
        if name not in found:
            raise CheckpointError(f"{path}: {what} '{name}' is missing; the checkpoint does not "
                                  f"fit its config (use a checkpoint from the same run)")
        if found[name].shape != array.shape:
            raise CheckpointError(f"{path}: {what} '{name}' has shape {found[name].shape} but "
                                  f"the model needs {array.shape}; use a checkpoint from the "
                                  f"same run")
    extra = sorted(set(found) - set(expected))
    if extra:
        raise CheckpointError(f"{path}: unexpected {what} '{extra[0]}' for this model; use a "
                              f"checkpoint from the same run")


def config_of(path, meta: dict):
    """The checkpoint's resolved config as a Config, or a CheckpointError naming the file."""
    config = meta.get("config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: its meta holds no config; pass a checkpoint written by "
                              f"`mnist-bp train`")
    try:
        return from_dict(config)
    except UserError as exc:
        raise CheckpointError(f"{path}: its config is invalid ({exc}); pass a checkpoint "
                              f"written by `mnist-bp train`") from None
