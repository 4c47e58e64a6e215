"""The share of a training epoch spent on augmentation, per shipped config that augments,
with batches prepared in the training thread and ahead in a worker thread.

For each config, steps of the real Trainer (`--steps` of them, alternating the four set-ups
over `--rounds` rounds, median per set-up): augmentation on and off, prefetch on and off.
Share = (step time with augmentation - step time without) / step time with augmentation.

    python benchmarks/augment_share.py --data-dir D [--steps 60] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

from mnist_bp import rng
from mnist_bp.config import AugmentConfig, load_config
from mnist_bp.data.augment import is_active
from mnist_bp.data.batches import Normalizer
from mnist_bp.data.datadir import load_dataset, resolve_data_dir
from mnist_bp.training import Trainer

CONFIGS = ("default", "fashion", "mnist-best", "mnist-robust")


def step_seconds(trainer: Trainer, steps: int, prefetch: bool) -> float:
    trainer.prefetch = prefetch  # training.prefetch, whatever the config says
    order = rng.stream(0, rng.SHUFFLE, 0).permutation(len(trainer.train_maker))
    start = time.perf_counter()
    for step, (x, y) in trainer.batches(order, 0, 0):
        if step == steps:
            break
        dropout_rng = rng.stream(0, rng.DROPOUT, 0, step) if trainer.dropout else None
        trainer.train_step(x, y, step, dropout_rng)
    return (time.perf_counter() - start) / steps


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    data_dir = resolve_data_dir(args.data_dir)
    print("| config | step, augmented (ms) | step, not augmented (ms) | augmentation share, "
          "in the training thread | augmentation share, prepared ahead |")
    print("|---|---|---|---|---|")
    for name in CONFIGS:
        cfg, _ = load_config(name)
        if not is_active(cfg.augment):
            continue
        train = load_dataset(cfg.data.dataset, data_dir, fetch=False).train
        plain = replace(cfg, augment=AugmentConfig())
        normalizer = Normalizer.fit(cfg.data.normalize, train.images)
        trainers = {aug: Trainer(c, train, None, normalizer)
                    for aug, c in ((True, cfg), (False, plain))}
        times = {(aug, pre): [] for aug in (True, False) for pre in (False, True)}
        for aug, pre in times:  # warm-up
            step_seconds(trainers[aug], 5, pre)
        for _ in range(args.rounds):
            for aug, pre in times:
                times[(aug, pre)].append(step_seconds(trainers[aug], args.steps, pre))
        med = {k: statistics.median(v) for k, v in times.items()}
        share = {pre: (med[(True, pre)] - med[(False, pre)]) / med[(True, pre)]
                 for pre in (False, True)}
        print(f"| {name} | {1000 * med[(True, False)]:.1f} -> {1000 * med[(True, True)]:.1f} | "
              f"{1000 * med[(False, False)]:.1f} -> {1000 * med[(False, True)]:.1f} | "
              f"{share[False]:.0%} | {share[True]:.0%} |", flush=True)


if __name__ == "__main__":
    main()
