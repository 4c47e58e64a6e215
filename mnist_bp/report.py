"""`mnist-bp report`: a run's learning curves, confusion matrix and mistakes, as PNG files and
one self-contained HTML page.

    mnist-bp report runs/x                      # -> runs/x/report/report.html
    mnist-bp report runs/a runs/b --out cmp/    # several runs overlaid and compared

`train` writes `RUN/report/` when it finishes. The figures use matplotlib (the `plot` extra,
imported only here, with the Agg backend); the numbers come from the run's files and from
scoring `checkpoints/best.npz` on the test set as `evaluate` does.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnist_bp import limits, rundir
from mnist_bp.data.registry import DIGITS, class_names
from mnist_bp.errors import UserError

FILES = ("report.html", "learning_curves.png", "confusion_matrix.png", "mistakes.png",
         "explain.png")
MISTAKES = 24  # the most confidently wrong test images shown per run
LOOKS_PER_CLASS = 100  # test images per class averaged into "what the network looks at"
LOOKS_MISTAKES = 6  # the most confident mistakes explained for both classes
LOOKS_STEPS = 32  # integrated gradients' steps in the report (64 on the command line)
# Okabe & Ito's palette: told apart with every common colour-vision deficiency
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
           "#000000"]
INSTALL_HINT = "install the plot extra: pip install 'mnist-bp[plot]' (or matplotlib)"


@dataclass
class RunData:
    """What one run directory holds, and its test-set scores when it has a best.npz."""

    path: Path
    name: str
    config_text: str
    history: list[dict]
    summary: dict | None
    dataset: str = ""
    scores: dict | None = None  # accuracy, loss, n, confusion, per_class, inverted_accuracy
    mistakes: list[tuple[np.ndarray, int, int, float]] = field(default_factory=list)
    looks: dict | None = None  # method, class_maps (10, 28, 28), mistake_maps [(pred, true)]
    missing: list[str] = field(default_factory=list)


def require_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise UserError(f"report needs matplotlib; {INSTALL_HINT}") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    return plt


METRIC_FIELDS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "train_seconds",
                 "seconds")
MAX_FILE_BYTES = limits.RUN_FILE_BYTES  # of any one run file the report reads


def read_text(path: Path) -> str:
    """A run file's text (limits.read_bounded: refused above MAX_FILE_BYTES, never cut
    short), bytes that are not UTF-8 replaced."""
    return limits.read_bounded(path, MAX_FILE_BYTES, "run file", "is it a run directory "
                               "written by mnist-bp train?").decode("utf-8", errors="replace")


def read_rows(path: Path, missing: list[str]) -> list[dict]:
    """metrics.jsonl's rows as the page shows them: an object with a whole-number `epoch`,
    each metric a finite number or None. Lines that are not such a row (torn by a crash,
    edited by hand) are left out and named in `missing`."""
    rows = []
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            row = None
        if not isinstance(row, dict) or type(row.get("epoch")) is not int \
                or not 0 <= row["epoch"] <= 10_000_000:
            missing.append(f"metrics.jsonl line {n} (not a metrics row; left out)")
            continue
        clean = {"epoch": row["epoch"]}
        for key in METRIC_FIELDS:
            value = row.get(key)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            clean[key] = float(value) if ok and np.isfinite(value) else None
        rows.append(clean)
    return rows


def read_run(path: Path) -> RunData:
    """A run directory's files; a folder that is not one, or has no epoch yet, is an error.
    Everything read here reaches the page escaped (`fmt`, `html.escape`) or not at all."""
    path = Path(path)
    if not (path / rundir.CONFIG).is_file():
        raise UserError(f"{path}: not a run directory (no config.yaml); pass a folder written "
                        "by `mnist-bp train`")
    missing: list[str] = []
    metrics = path / rundir.METRICS
    rows = read_rows(metrics, missing) if metrics.is_file() else []
    if not rows:
        raise UserError(f"{path}: no metrics.jsonl rows yet; the run has not finished an epoch "
                        "(train it, or resume it with `mnist-bp train --resume`)")
    summary = None
    summary_path = path / rundir.SUMMARY
    if summary_path.is_file():
        try:
            summary = json.loads(read_text(summary_path))
        except (ValueError, RecursionError):
            summary = None
        if not isinstance(summary, dict):
            summary = None
            missing.append("summary.json (not a JSON object; left out)")
    run = RunData(path, path.resolve().name, read_text(path / rundir.CONFIG), rows, summary)
    run.missing += missing
    if summary is None and not summary_path.is_file():
        run.missing.append("summary.json (the run has not finished)")
    return run


def score_run(run: RunData, data_dir, log=None) -> None:
    """Score best.npz on the test set (and on inverted colours); keep the worst mistakes."""
    from mnist_bp.data.datadir import load_dataset
    from mnist_bp.model import load
    from mnist_bp.nn.losses import probabilities
    from mnist_bp.scoring import invert_transform, per_class

    best = run.path / rundir.BEST
    if not best.is_file():
        run.missing.append("checkpoints/best.npz (no confusion matrix or mistakes)")
        return
    model = load(best)
    cfg = model.cfg
    run.dataset = cfg.data.dataset
    test = load_dataset(cfg.data.dataset, data_dir, log=log).test
    result = model.score(test.images, test.labels, keep_outputs=True)  # as `evaluate` scores
    inverted = model.score(test.images, test.labels, invert_transform)
    run.scores = {"accuracy": result["accuracy"], "loss": result["loss"], "n": result["n"],
                  "confusion": result["confusion_matrix"],
                  "per_class": per_class(result["confusion_matrix"]),
                  "inverted_accuracy": inverted["accuracy"]}
    probs = probabilities(result["outputs"], model.sigmoid_outputs)
    pred = probs.argmax(axis=1)
    labels = np.asarray(test.labels)
    wrong = np.flatnonzero(pred != labels)
    worst = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:MISTAKES]
    run.mistakes = [(np.asarray(test.images[i]), int(labels[i]), int(pred[i]),
                     float(probs[i, pred[i]])) for i in worst]
    run.looks = looks(model, test.images, labels, worst[:LOOKS_MISTAKES], pred)


def looks(model, images, labels: np.ndarray, mistakes: np.ndarray, pred: np.ndarray) -> dict:
    """What the network looks at (explain.py): each class's mean attribution over (up to
    LOOKS_PER_CLASS of) its own test images, and the most confident mistakes' attributions
    for the predicted and for the true class."""
    from mnist_bp.explain import default_method, explain

    method = default_method(model)
    class_maps = np.zeros((10, 28, 28), np.float32)
    for c in range(10):
        mine = np.flatnonzero(labels == c)[:LOOKS_PER_CLASS]
        if len(mine):
            x = np.asarray(images[np.sort(mine)], np.float32) / 255
            class_maps[c] = explain(model, x, c, method, LOOKS_STEPS).attributions.mean(axis=0)
    mistake_maps = []
    if len(mistakes):
        x = np.asarray(images[mistakes], np.float32) / 255
        for_pred = explain(model, x, pred[mistakes], method, LOOKS_STEPS).attributions
        for_true = explain(model, x, labels[mistakes], method, LOOKS_STEPS).attributions
        mistake_maps = list(zip(for_pred, for_true, strict=True))
    return {"method": method, "class_maps": class_maps, "mistake_maps": mistake_maps}


def class_labels(dataset: str) -> tuple[str, ...]:
    """Axis and table labels for classes 0..9: the digits, or "6 Shirt" where the classes have
    names (Fashion-MNIST, KMNIST)."""
    names = class_names(dataset)
    return names if names == DIGITS else tuple(f"{k} {name}" for k, name in enumerate(names))


# --- figures ---------------------------------------------------------------------------------

def png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def plain(text: str) -> str:
    """A run's name as matplotlib text: `$` escaped, so that no name is read as mathtext."""
    return text.replace("$", r"\$")


def curves_figure(plt, runs: list[RunData]):
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), constrained_layout=True)
    for k, run in enumerate(runs):
        colour = PALETTE[k % len(PALETTE)]
        epochs = [r["epoch"] for r in run.history]
        label = plain(run.name) if len(runs) > 1 else None
        for ax, key in ((axes[0], "loss"), (axes[1], "acc")):
            ax.plot(epochs, [np.nan if r[f"train_{key}"] is None else r[f"train_{key}"]
                             for r in run.history], color=colour,
                    label=f"{label + ': ' if label else ''}training")
            val = [r[f"val_{key}"] for r in run.history]
            if any(v is not None for v in val):
                ax.plot(epochs, [np.nan if v is None else v for v in val], color=colour,
                        linestyle="--", label=f"{label + ': ' if label else ''}validation")
        axes[2].plot(epochs, [np.nan if r["lr"] is None else r["lr"] for r in run.history],
                     color=colour, label=label)
    for ax, title in zip(axes, ("loss", "accuracy", "learning rate (end of epoch)"),
                         strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8, loc="lower right")
    if len(runs) > 1:
        axes[2].legend(fontsize=8)
    return fig


def confusion_figure(plt, runs: list[RunData]):
    from matplotlib.colors import PowerNorm

    scored = [r for r in runs if r.scores]
    fig, axes = plt.subplots(1, len(scored), figsize=(5.6 * len(scored), 5.2),
                             constrained_layout=True, squeeze=False)
    for ax, run in zip(axes[0], scored, strict=True):
        counts = run.scores["confusion"]
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        # a power scale, so that shares of a few percent (the mistakes) stand out too
        ax.imshow(share, cmap="viridis", norm=PowerNorm(0.35, vmin=0, vmax=1))
        for t in range(10):
            for p in range(10):
                if counts[t, p]:
                    ax.text(p, t, str(counts[t, p]), ha="center", va="center", fontsize=7,
                            color="black" if share[t, p] > 0.15 else "white")
        names = class_labels(run.dataset)
        ax.set_xticks(range(10), names, rotation=90 if names != DIGITS else 0)
        ax.set_yticks(range(10), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{plain(run.name)}: test accuracy {run.scores['accuracy']:.4f}",
                     fontsize=10)
    return fig


def mistakes_figure(plt, runs: list[RunData], columns: int = 8):
    scored = [r for r in runs if r.scores]
    rows_per_run = [max(1, -(-len(r.mistakes) // columns)) for r in scored]
    fig, axes = plt.subplots(sum(rows_per_run), columns,
                             figsize=(columns * 1.25, sum(rows_per_run) * 1.5 + 0.3),
                             squeeze=False)
    row = 0
    for run, n_rows in zip(scored, rows_per_run, strict=True):
        names = class_names(run.dataset)
        for i in range(n_rows * columns):
            ax = axes[row + i // columns, i % columns]
            ax.axis("off")
            if i < len(run.mistakes):
                image, true, pred, confidence = run.mistakes[i]
                ax.imshow(image, cmap="gray", vmin=0, vmax=255)
                ax.set_title(f"{names[true]} → {names[pred]}\n{confidence:.2f}", fontsize=7)
        if len(scored) > 1:
            axes[row, 0].text(-0.2, 0.5, plain(run.name), transform=axes[row, 0].transAxes,
                              rotation=90, va="center", ha="right", fontsize=8)
        if not run.mistakes:
            axes[row, 0].text(0, 0.5, "no mistakes", fontsize=9)
        row += n_rows
    fig.suptitle("most confidently wrong test images (true class → prediction, confidence)",
                 fontsize=9)
    fig.tight_layout()
    return fig


def explain_figure(plt, runs: list[RunData]):
    """Per run: a row of the ten classes' mean attributions, then the most confident mistakes,
    each as the image and its attributions for the predicted and for the true class (red
    raises that class's probability, blue lowers it; each map on its own symmetric scale)."""
    scored = [r for r in runs if r.looks]
    per_run = 1 + -(-LOOKS_MISTAKES // 3)
    fig, axes = plt.subplots(per_run * len(scored), 10, figsize=(12, 1.45 * per_run
                                                                  * len(scored) + 0.4),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")

    def heat(ax, a, under=None):
        m = float(np.abs(a).max()) or 1.0
        if under is not None:
            ax.imshow(under, cmap="gray_r", vmin=0, vmax=255)
        ax.imshow(a, cmap="RdBu_r", vmin=-m, vmax=m, alpha=0.85 if under is not None else 1)

    for k, run in enumerate(scored):
        top = k * per_run
        names = class_names(run.dataset)
        for c in range(10):
            heat(axes[top, c], run.looks["class_maps"][c])
            axes[top, c].set_title(f"{names[c]}", fontsize=8)
        axes[top, 0].text(-0.25, 0.5, f"{plain(run.name)}\nclass means", fontsize=7,
                          rotation=90, va="center", ha="right", transform=axes[top, 0].transAxes)
        for i, (for_pred, for_true) in enumerate(run.looks["mistake_maps"]):
            image, true, pred, confidence = run.mistakes[i]
            row, col = top + 1 + i // 3, 3 * (i % 3)
            axes[row, col].imshow(image, cmap="gray", vmin=0, vmax=255)
            axes[row, col].set_title(f"{names[true]} read {names[pred]} ({confidence:.2f})",
                                     fontsize=7)
            heat(axes[row, col + 1], for_pred, image)
            axes[row, col + 1].set_title(f"for {names[pred]}", fontsize=7)
            heat(axes[row, col + 2], for_true, image)
            axes[row, col + 2].set_title(f"for {names[true]}", fontsize=7)
    method = scored[0].looks["method"] if scored else ""
    fig.suptitle(f"what the network looks at ({method}): red raises the class's probability, "
                 "blue lowers it", fontsize=9)
    fig.tight_layout()
    return fig


# --- the page --------------------------------------------------------------------------------

def fmt(value, digits: int = 4) -> str:
    """A value for the page: floats rounded, everything else as escaped text."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value)[:200])


def summary_rows(run: RunData) -> list[tuple[str, str]]:
    s = run.summary or {}
    rows = [("dataset", fmt(run.dataset or s.get("dataset"))),
            ("test accuracy", fmt(s.get("test_accuracy"))),
            ("test loss", fmt(s.get("test_loss"))),
            ("best epoch", fmt(s.get("best_epoch"))),
            ("best validation accuracy", fmt(s.get("best_val_accuracy"))),
            ("epochs run", fmt(s.get("epochs_run", len(run.history)))),
            ("total time (s)", fmt(s.get("total_seconds"), 1))]
    if run.scores:
        rows.append(("test accuracy, inverted colours (black on white)",
                     fmt(run.scores["inverted_accuracy"])))
    return rows


def table(head: list[str], rows: list[list[str]], cls: str, ident: str) -> str:
    thead = ("<thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead>"
             if any(head) else "")
    out = [f'<table class="{cls}" id="{ident}">{thead}<tbody>']
    out += ["<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows]
    return "\n".join(out) + "</tbody></table>"


def img_tag(data: bytes, alt: str) -> str:
    return (f'<img alt="{html.escape(alt)}" src="data:image/png;base64,'
            f'{base64.b64encode(data).decode()}">')


def page(runs: list[RunData], figures: dict[str, bytes]) -> str:
    title = runs[0].name if len(runs) == 1 else f"{len(runs)} runs compared"
    parts = [f"<h1>mnist-bp report: {html.escape(title)}</h1>"]
    for run in runs:
        for line in run.missing:
            parts.append(f'<p class="missing">{html.escape(run.name)}: missing '
                         f"{html.escape(line)}</p>")
    if len(runs) > 1:
        keys = [k for k, _ in summary_rows(runs[0])]
        rows = [[html.escape(r.name)] + [v for _, v in summary_rows(r)] for r in runs]
        parts += ["<h2>Runs</h2>", table(["run", *keys], rows, "compare", "runs")]
    else:
        parts += ["<h2>Summary</h2>", table(["", ""], [list(r) for r in summary_rows(runs[0])],
                                            "summary", "summary")]
    parts += ["<h2>Learning curves</h2>", img_tag(figures["learning_curves.png"],
                                                  "learning curves")]
    if "confusion_matrix.png" in figures:
        parts += ["<h2>Confusion matrix (test set, best.npz)</h2>",
                  "<p>Rows: true class; columns: predicted; colour: share of the row.</p>",
                  img_tag(figures["confusion_matrix.png"], "confusion matrix"),
                  "<h2>Mistakes</h2>", img_tag(figures["mistakes.png"], "mistakes")]
    if "explain.png" in figures:
        parts += ["<h2>What the network looks at</h2>",
                  "<p>Backpropagation carried to the pixels (<code>mnist-bp explain</code>): "
                  "top row, each class's mean attribution over up to "
                  f"{LOOKS_PER_CLASS} of its own test images; below, the most confident "
                  "mistakes with their attributions for the class the network read and for "
                  "the true class. Red pixels raise that class's probability, blue ones lower "
                  "it.</p>", img_tag(figures["explain.png"], "what the network looks at")]
    for k, run in enumerate(runs):
        head = f" ({html.escape(run.name)})" if len(runs) > 1 else ""
        if run.scores:
            names = class_labels(run.dataset)
            rows = [[html.escape(names[c["class"]]), fmt(c["precision"]), fmt(c["recall"]),
                     fmt(c["f1"]), str(c["support"])] for c in run.scores["per_class"]]
            parts += [f"<h2>Per class{head}</h2>",
                      table(["class", "precision", "recall", "F1", "support"], rows, "num",
                            f"per-class-{k}")]
        rows = [[fmt(r["epoch"]), fmt(r["train_loss"]), fmt(r["train_acc"]),
                 fmt(r["val_loss"]), fmt(r["val_acc"]),
                 "–" if r["lr"] is None else f"{r['lr']:.3g}",
                 fmt(r["train_seconds"], 2), fmt(r["seconds"], 2)] for r in run.history]
        parts += [f"<h2>Epochs{head}</h2>",
                  table(["epoch", "train loss", "train acc", "val loss", "val acc", "lr",
                         "train s", "s"], rows, "num", f"epochs-{k}"),
                  f"<h2>Config{head}</h2>", f"<pre>{html.escape(run.config_text)}</pre>"]
    style = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;"
             "padding:0 1em;color:#222}img{max-width:100%}table{border-collapse:collapse;"
             "margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}"
             "table.num td{text-align:right}.missing{color:#D55E00;font-weight:bold}"
             "pre{background:#f6f6f6;padding:1em;overflow:auto}")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{style}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def make_report(run_dirs: list[Path], out: Path | None = None, data_dir=None,
                log=None) -> Path:
    """Write the report of one or several runs; returns the output folder."""
    if not run_dirs:
        raise UserError("report needs at least one RUN_DIR")
    if out is None:
        if len(run_dirs) > 1:
            raise UserError("several runs need --out DIR for their common report")
        out = Path(run_dirs[0]) / rundir.REPORT
    runs = [read_run(p) for p in run_dirs]  # every error before anything is written
    plt = require_matplotlib()
    names = [r.name for r in runs]
    for k, run in enumerate(runs):  # unique labels, e.g. two runs both called "run"
        if names.count(run.name) > 1:
            run.name = f"{run.name} ({k + 1})"
    for run in runs:
        score_run(run, data_dir, log=log)
    figures = {}
    fig = curves_figure(plt, runs)
    figures["learning_curves.png"] = png(fig)
    plt.close(fig)
    if any(r.scores for r in runs):
        for name, make in (("confusion_matrix.png", confusion_figure),
                           ("mistakes.png", mistakes_figure),
                           ("explain.png", explain_figure)):
            fig = make(plt, runs)
            figures[name] = png(fig)
            plt.close(fig)
    folder = report_folder(Path(out))
    for name in [*figures, "report.html"]:  # every refusal before anything is written
        folder.check(name)
    for name, data in figures.items():
        with folder.writing(name) as f:
            f.write(data)
    with folder.writing("report.html", "w") as f:
        f.write(page(runs, figures))
    return folder.folder


def report_folder(out: Path) -> rundir.Owned:
    """The report's folder: its files are replaced only where this tool wrote them (a
    report of an earlier mnist-bp, recognised by its page, counts as written here)."""
    out.mkdir(parents=True, exist_ok=True)
    folder = rundir.Owned(out, "move it away, or pass another --out")
    if not (out / rundir.MANIFEST).exists() and (out / "report.html").exists():
        # a report an earlier mnist-bp wrote (no record yet): its page says so, and its
        # pictures were written with it, within seconds; anything else stays refused
        try:
            page = limits.read_bounded(out / "report.html", MAX_FILE_BYTES, "report page")
        except UserError:
            return folder
        if b"<h1>mnist-bp report: " in page[:4096]:
            written = (out / "report.html").stat().st_mtime
            folder.adopt("report.html", *(
                name for name in FILES[1:] if (out / name).is_file()
                and not (out / name).is_symlink()
                and abs((out / name).stat().st_mtime - written) < 60))
    return folder
