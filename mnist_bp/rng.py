"""Random streams derived from the run's one seed.

Each purpose (initialisation, shuffling, augmentation, dropout) gets generators keyed by
(seed, purpose, epoch, step) through `np.random.SeedSequence`. A stream therefore depends
only on where training is, not on what ran before: resuming from a checkpoint needs just the
counters, and batch preparation could run ahead in a thread without changing any result.
"""

from __future__ import annotations

import numpy as np

INIT, SHUFFLE, AUGMENT, DROPOUT, EVAL_COLORS = range(5)


def stream(seed: int, purpose: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, purpose, *keys]))
