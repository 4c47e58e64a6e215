"""The Python API: train and use networks from a notebook or a script.

    import mnist_bp
    run = mnist_bp.train("default", training__epochs=5)      # a Run
    model = run.model()                                        # or mnist_bp.load(path)
    model.predict(images)[0]["digit"]

`mnist_bp.train` is `mnist-bp train` (same configs, run directory, checkpoints); keyword
arguments set config keys, `__` standing for the dots of `--set` (`training__epochs=5` is
`--set training.epochs=5`). `mnist_bp.load` returns a `model.Model`. docs/api.md has the
examples, run as doctests by the tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mnist_bp.errors import UserError, check_bool, check_path, user_errors


def json_value(key: str, value) -> str:
    """A keyword's value as --set writes it: numpy numbers and arrays become plain ones."""
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        value = value.tolist()
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        raise UserError(f"{key.replace('__', '.')}: {type(value).__name__} is not a config "
                        f"value; give a number, a string, a bool or a list") from None


@dataclass(frozen=True)
class Run:
    """A finished training run: its directory and summary.json's numbers."""

    dir: Path
    summary: dict

    @property
    def checkpoint(self) -> Path:
        """`RUN/checkpoints/best.npz`: the best epoch (the last without validation)."""
        from mnist_bp.rundir import RunDir
        return RunDir(self.dir).checkpoint

    @property
    def metrics(self) -> list[dict]:
        """One dict per epoch, as in `RUN/metrics.jsonl`."""
        from mnist_bp.limits import RUN_FILE_BYTES, read_bounded
        from mnist_bp.rundir import METRICS
        lines = read_bounded(self.dir / METRICS, RUN_FILE_BYTES, "metrics file").decode(
            "utf-8", errors="replace").splitlines()
        rows = []
        for line in lines:  # a line torn by a crash is left out, as `report` leaves it out
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
        return rows

    def model(self):
        """The best checkpoint, loaded (a `mnist_bp.model.Model`)."""
        from mnist_bp.model import load
        return load(self.checkpoint)


@user_errors
def train(config: str | Path = "default", *, data_dir: str | Path | None = None,
          run_dir: str | Path | None = None, tensorboard: bool = False, **overrides) -> Run:
    """Train `config` (a YAML file or a shipped config's name) and return the `Run`.

    Each keyword sets a config key, with `__` for its dots (`optimizer__learning_rate=3e-4`);
    the data dir is `data_dir`, else `$MNIST_BP_DATA_DIR`, else the user's cache; the run
    directory `run_dir`, else `runs/<date>-<config>/`. Errors a user can fix raise
    `mnist_bp.errors.UserError` with one line naming the key or file.
    """
    from mnist_bp.config import load_config
    from mnist_bp.training import run

    check_path(config, "config")
    check_path(data_dir, "data_dir", optional=True)
    check_path(run_dir, "run_dir", optional=True)
    check_bool(tensorboard, "tensorboard")
    assignments = [f"{key.replace('__', '.')}={json_value(key, value)}"
                   for key, value in overrides.items()]
    cfg, source = load_config(config, assignments)
    summary = run(cfg, Path(run_dir) if run_dir else None, data_dir, config_name=source.stem,
                  tensorboard=tensorboard)
    return Run(Path(summary["run_dir"]), summary)
