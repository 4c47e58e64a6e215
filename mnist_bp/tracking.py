"""TensorBoard logs of a run: `train --tensorboard` (or `training.tensorboard: true`).

    mnist-bp train default --tensorboard
    tensorboard --logdir runs/

Event files go under `RUN/tensorboard/`: for every epoch (the epoch number as the step) one
scalar per number in `metrics.jsonl` (`train_loss`, `train_acc`, `val_loss`, `val_acc`, `lr`,
`train_seconds`, `seconds`; nulls are left out), the hyperparameters with the run's final
numbers, and a histogram of each weight matrix. Written with tensorboardX (the `tracking`
extra), imported only here.
"""

from __future__ import annotations

from pathlib import Path

from mnist_bp.config import to_dict
from mnist_bp.errors import UserError

INSTALL_HINT = "install the tracking extra: pip install 'mnist-bp[tracking]' (tensorboardX)"
HPARAMS = ("optimizer.name", "optimizer.learning_rate", "training.batch_size", "training.epochs",
           "model.activation", "model.dropout", "data.dataset", "data.normalize", "seed")


def flat(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat(value, name + "."))
        else:
            out[name] = value
    return out


class TensorBoardLog:
    """One run's event files; `epoch(row, params)` after each epoch, `close(summary)` at the
    end."""

    def __init__(self, folder: Path, cfg):
        """`folder`: RUN/tensorboard/ (rundir.TENSORBOARD), made by the run."""
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise UserError(f"--tensorboard needs tensorboardX; {INSTALL_HINT}") from None
        self.cfg = cfg
        self.writer = SummaryWriter(logdir=str(folder))

    def epoch(self, row: dict, params: dict | None = None) -> None:
        step = row["epoch"]
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, step)
        for name, array in (params or {}).items():
            if name.endswith(".W"):
                self.writer.add_histogram(name, array, step)
        self.writer.flush()

    def close(self, summary: dict | None = None) -> None:
        if summary is not None:
            from tensorboardX.summary import hparams

            config = flat(to_dict(self.cfg))
            chosen = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                      for k, v in config.items() if k in HPARAMS}
            metrics = {f"hparam/{k}": summary[k] for k in ("test_accuracy", "best_val_accuracy")
                       if isinstance(summary.get(k), (int, float))}
            for event in hparams(chosen, metrics):
                self.writer.file_writer.add_summary(event)
            for key, value in metrics.items():
                self.writer.add_scalar(key, value, summary.get("epochs_run", 0))
        self.writer.close()
