"""Metrics files of a run: `metrics.jsonl` and `metrics.csv` (one row per epoch), `summary.json`.

The history lives in the checkpoint too; both files are rewritten from it atomically after
each epoch, so a resumed run never shows a row twice.
"""

from __future__ import annotations

import csv
import io
import json

from mnist_bp import rundir

COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "train_seconds",
           "seconds"]


def write_history(run: rundir.RunDir, history: list[dict]) -> None:
    with run.writing(rundir.METRICS, "w") as f:
        for row in history:
            f.write(json.dumps(row) + "\n")
    buf = io.StringIO()
    columns = COLUMNS + [k for k in (history[0] if history else {}) if k not in COLUMNS]
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    with run.writing(rundir.METRICS_CSV, "w") as f:
        f.write(buf.getvalue())


def write_summary(run: rundir.RunDir, summary: dict) -> None:
    with run.writing(rundir.SUMMARY, "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
