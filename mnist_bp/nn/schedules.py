"""Learning-rate schedules: pure functions of the step, so resuming needs only the step count.

`learning_rate(cfg, base_lr, step, steps_per_epoch, epochs)` gives the rate for the update
numbered `step` (0-based, counted over the whole run).
"""

from __future__ import annotations

import math


def _warmup_factor(step: int, warmup_steps: int) -> float:
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


def learning_rate(cfg, base_lr: float, step: int, steps_per_epoch: int, epochs: int) -> float:
    total = steps_per_epoch * epochs
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if cfg.name == "onecycle":
        # rise from base/div to base over pct_start of the run (cosine), then fall to
        # base/div/final_div (cosine), as in Smith & Topin's 1cycle.
        start = base_lr / cfg.div_factor
        end = start / cfg.final_div_factor
        peak = max(1, int(cfg.pct_start * total))
        if step < peak:
            return _cosine(start, base_lr, step / peak)
        return _cosine(base_lr, end, (step - peak) / max(1, total - peak))
    factor = _warmup_factor(step, warmup)
    if cfg.name == "constant":
        return base_lr * factor
    if cfg.name == "step":
        return base_lr * factor * cfg.gamma ** (step // (cfg.step_epochs * steps_per_epoch))
    if cfg.name == "cosine":
        if step < warmup:
            return base_lr * factor
        progress = (step - warmup) / max(1, total - warmup)
        return _cosine(base_lr, cfg.min_lr, min(progress, 1.0))
    raise ValueError(f"unknown schedule {cfg.name}")


def _cosine(start: float, end: float, progress: float) -> float:
    """From `start` at progress 0 to `end` at progress 1 along half a cosine."""
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * progress))
