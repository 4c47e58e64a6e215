"""The `mnist-bp` command line: click commands only; the work happens in the modules.

Heavy modules (numpy, requests, yaml) are imported inside the commands so that
`mnist-bp --help` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from mnist_bp.data.registry import DATASETS
from mnist_bp.errors import UserError
from mnist_bp.version import __version__

DATASET_CHOICE = click.Choice(list(DATASETS))
PATH = click.Path(path_type=Path)
DATA_DIR_HELP = ("Data dir holding NAME/ folders [default: $MNIST_BP_DATA_DIR, else "
                 "$XDG_CACHE_HOME/mnist-bp, else ~/.cache/mnist-bp].")


def echo_err(message: str) -> None:
    click.echo(message, err=True)


class Main(click.Group):
    """Turns a UserError anywhere below, and a file-system error no command foresaw (a path
    that is a file where a folder must be, a name too long...), into one `Error: ...` line
    and exit status 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise click.ClickException(f"{where}{exc.strerror or exc}; check the path") \
                from None


@click.group(cls=Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mnist-bp")
def main():
    """Train multilayer perceptrons on MNIST with backpropagation written in numpy.

    \b
    Quick start:
      mnist-bp download                       # fetch and cache MNIST
      mnist-bp train                          # train configs/default.yaml
      mnist-bp evaluate runs/<run>/checkpoints/best.npz --invert
      mnist-bp predict runs/<run>/checkpoints/best.npz my-digit.jpg
      mnist-bp serve runs/<run>/checkpoints/best.npz --open

    Every command explains itself: mnist-bp COMMAND --help.
    """


# --- download ------------------------------------------------------------------------------

@main.command()
@click.option("--dataset", "name", type=DATASET_CHOICE, default="mnist", show_default=True,
              help="Which dataset to fetch.")
@click.option("--data-dir", type=PATH, help=DATA_DIR_HELP)
@click.option("--from", "source", type=PATH, metavar="DIR",
              help="Import the four files from a local folder (gzip or raw IDX) instead of "
                   "downloading, e.g. --from ~/Downloads/mnist.")
@click.option("--mirror", "mirrors", multiple=True, metavar="URL",
              help="Extra base URL to try first (repeatable; also $MNIST_BP_MIRROR, "
                   "comma- or space-separated), e.g. --mirror http://127.0.0.1:8000/mnist/.")
@click.option("--force", is_flag=True, help="Fetch again even when the files are present.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds to wait for a connection or for the next bytes.")
@click.option("--retries", type=click.IntRange(min=0), default=2, show_default=True,
              help="Extra tries per mirror after a transient failure (with backoff).")
def download(name, data_dir, source, mirrors, force, timeout, retries):
    """Download and cache a dataset, verifying official checksums.

    Files go to DATA_DIR/NAME/ under their official names, streamed to a .part file,
    resumed after interruptions and renamed only once the checksum matches. Mirrors are tried
    in order; any failure falls through to the next.

    \b
    Examples:
      mnist-bp download
      mnist-bp download --dataset fashion-mnist --data-dir ./data
      mnist-bp download --from ~/Downloads/mnist --data-dir ./data
      MNIST_BP_MIRROR=http://127.0.0.1:8000/ mnist-bp download --force
    """
    from mnist_bp.data.cache import load_cached
    from mnist_bp.data.datadir import resolve_data_dir
    from mnist_bp.data.download import download_dataset
    from mnist_bp.data.importer import import_from
    from mnist_bp.data.registry import get_dataset

    spec = get_dataset(name)
    root = resolve_data_dir(data_dir)
    if source is not None:
        reports = import_from(spec, source, root, log=echo_err, force=force)
        for r in reports:
            verdict = ("matches the official checksum" if r["matches_official"] else
                       "does NOT match the official checksum (imported as is)")
            click.echo(f"  {r['file']:<28} {r['count']:>6} items  {verdict}")
        folder = root / name
    else:
        click.echo(f"{name}: fetching into {root / name}")
        folder = download_dataset(spec, root, mirrors=mirrors, force=force,
                                  timeout=(min(timeout, 10.0), timeout), retries=retries,
                                  log=echo_err)
    ds = load_cached(folder, log=echo_err)
    click.echo(f"{name} ready in {folder}: {len(ds.train)} training and {len(ds.test)} test images")


# --- train ---------------------------------------------------------------------------------

class ConsoleReporter:
    """Epoch lines on stdout; a live progress bar on stderr when it is a terminal."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def info(self, message: str) -> None:
        if not self.quiet:
            echo_err(message)

    def warn(self, message: str) -> None:
        echo_err(f"Warning: {message}")

    def step_callback(self, epoch: int, epochs: int):
        if self.quiet or not sys.stderr.isatty():
            return None
        from mnist_bp.progress import ProgressBar

        def render(done, elapsed):
            s = self._sums
            if not s or not s["seen"]:
                return ""
            return (f"loss {s['loss_sum'] / s['seen']:.4f} acc {s['correct'] / s['seen']:.4f} "
                    f"{s['seen'] / max(elapsed, 1e-9):,.0f} samples/s")

        self._sums = None
        bar = ProgressBar(f"epoch {epoch}/{epochs}", None, render)

        def on_step(step, steps, sums, elapsed):
            self._sums = sums
            bar.total = steps
            bar.update(step, force=step == steps)
            if step == steps:
                sys.stderr.write("\r\033[K")

        return on_step

    def epoch_end(self, row: dict, epochs: int, n_train: int) -> None:
        if self.quiet:
            return
        val = (f"  val_loss {row['val_loss']:.4f}  val_acc {row['val_acc']:.4f}"
               if row["val_acc"] is not None else "")
        click.echo(f"epoch {row['epoch']:>3}/{epochs}  train_loss {row['train_loss']:.4f}  "
                   f"train_acc {row['train_acc']:.4f}{val}  lr {row['lr']:.3g}  "
                   f"{row['train_seconds']:.1f}s ({n_train / row['train_seconds']:,.0f} samples/s)")

    def finished(self, summary: dict) -> None:
        click.echo(f"run: {summary['run_dir']}")
        click.echo(f"test accuracy {summary['test_accuracy']:.4f} "
                   f"(loss {summary['test_loss']:.4f}) "
                   f"with best.npz from epoch {summary['best_epoch']}; "
                   f"{summary['epochs_run']} epochs in {summary['total_seconds']:.1f}s")


@main.command()
@click.argument("config", required=False, metavar="[CONFIG]")
@click.option("--data-dir", type=PATH, help=DATA_DIR_HELP)
@click.option("--run-dir", type=PATH,
              help="Run directory to write (parents created) [default: runs/<time>-<config>].")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key (repeatable), e.g. --set optimizer.learning_rate=0.01 "
                   "--set model.hidden=[512,512].")
@click.option("--resume", type=PATH, metavar="CKPT",
              help="Continue a run from its checkpoint, e.g. runs/x/checkpoints/last.npz "
                   "(config and run dir come from the checkpoint).")
@click.option("--quiet", "-q", is_flag=True, help="Print only the final result.")
@click.option("--no-report", is_flag=True,
              help="Do not write RUN/report/ (curves, confusion matrix, mistakes) at the end.")
@click.option("--tensorboard", is_flag=True,
              help="Write TensorBoard event files under RUN/tensorboard/ (same as --set "
                   "training.tensorboard=true); view them with: tensorboard --logdir runs/")
def train(config, data_dir, run_dir, overrides, resume, quiet, no_report, tensorboard):
    """Train an MLP from a YAML config with backpropagation.

    CONFIG is a YAML file or the name of a shipped config (default, classic, bench,
    mnist-best, mnist-robust, fashion); without it, configs/default.yaml. The dataset is
    downloaded first if it is not cached. Writes config.yaml, metrics.jsonl/csv,
    checkpoints/last.npz and best.npz, and summary.json with the test accuracy.
    Ctrl-C saves last.npz and prints the command that resumes.

    \b
    Examples:
      mnist-bp train
      mnist-bp train configs/classic.yaml --set training.epochs=5
      mnist-bp train configs/default.yaml --data-dir ./data --run-dir runs/mine
      mnist-bp train --resume runs/mine/checkpoints/last.npz
    """
    from mnist_bp.config import load_config
    from mnist_bp.training import Interrupted, run

    reporter = ConsoleReporter(quiet)
    if resume is not None:
        if config or overrides or run_dir:
            raise click.UsageError("--resume takes the config and run dir from the checkpoint; "
                                   "drop CONFIG, --set and --run-dir")
        cfg, name = None, None
    else:
        cfg, source = load_config(config, overrides)
        name = source.stem
    try:
        summary = run(cfg, run_dir, data_dir, config_name=name, resume=resume,
                      reporter=reporter, tensorboard=tensorboard)
    except Interrupted as stop:
        echo_err(f"\ninterrupted: saved {stop.checkpoint}\n"
                 f"resume with: mnist-bp train --resume {stop.checkpoint}"
                 + (f" --data-dir {data_dir}" if data_dir else ""))
        sys.exit(130)
    if not no_report:
        write_run_report(Path(summary["run_dir"]), data_dir)


def write_run_report(run_dir: Path, data_dir) -> None:
    """The report at the end of `train`; without matplotlib, a notice instead."""
    from mnist_bp.report import INSTALL_HINT, make_report

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        echo_err(f"report skipped: matplotlib is not installed; {INSTALL_HINT}")
        return
    out = make_report([run_dir], data_dir=data_dir)
    click.echo(f"report: {out / 'report.html'}")


# --- evaluate ------------------------------------------------------------------------------

@main.command()
@click.argument("checkpoint", type=PATH)
@click.option("--data-dir", type=PATH, help=DATA_DIR_HELP)
@click.option("--dataset", "name", type=DATASET_CHOICE,
              help="Dataset to score on [default: the one the checkpoint was trained on].")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True,
              help="Which file pair to score.")
@click.option("--invert", is_flag=True,
              help="Score on colour-inverted images (255 - pixel): black digits on white. A "
                   "plain flag: a test set has one known polarity (predict, whose photos have "
                   "any, decides per image with --invert auto|yes|no).")
@click.option("--colors", type=click.Choice(["normal", "random"]), default="normal",
              show_default=True,
              help="random: give every image its own foreground/background intensities.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --colors random.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object (accuracy, loss, n, per_class, confusion_matrix).")
def evaluate(checkpoint, data_dir, name, split, invert, colors, seed, as_json):
    """Score a checkpoint: accuracy, loss, per-class precision/recall/F1, confusion matrix.

    \b
    Examples:
      mnist-bp evaluate runs/x/checkpoints/best.npz
      mnist-bp evaluate runs/x/checkpoints/best.npz --invert --json
      mnist-bp evaluate runs/x/checkpoints/best.npz --colors random --seed 1
    """
    from mnist_bp.evaluate import score_checkpoint

    result = score_checkpoint(checkpoint, data_dir, name, split, invert, colors, seed,
                              log=echo_err)
    if as_json:
        click.echo(json.dumps(result))
        return
    from mnist_bp.evaluate import format_report

    click.echo(format_report(result))


# --- predict -------------------------------------------------------------------------------

@main.command()
@click.argument("checkpoint", type=PATH)
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: checkpoint, predictions, errors.")
@click.option("--top", "k", type=click.IntRange(1, 10), default=3, show_default=True,
              help="How many of the likeliest digits to show.")
@click.option("--invert", type=click.Choice(["auto", "yes", "no"]), default="auto",
              show_default=True,
              help="auto: the network always sees light ink on dark, as in MNIST; no: the "
                   "image's own polarity (dark ink on paper stays dark on light); yes: the "
                   "opposite of the image's own. A choice, not evaluate's plain --invert flag: "
                   "a photo's polarity is found per image, so 'inverted' is relative to it.")
@click.option("--number", is_flag=True,
              help="The image holds a number: split it into digits, read left to right.")
@click.option("--save-inputs", type=PATH, metavar="DIR",
              help="Write the 28x28 images the network saw to DIR as PNG files (never "
                   "replacing a file: a taken name gets ~2, ~3...).")
def predict(checkpoint, inputs, as_json, k, invert, number, save_inputs):
    """Predict the digits in your own images (photos, scans, drawings).

    INPUT is an image file (PNG, JPEG, BMP, GIF, TIFF, WebP...), a directory (its images,
    sorted by name) or - for one image on standard input. Each image is made to look like
    MNIST: grayscale, light ink on a dark background (whichever the paper is), paper tint
    and shadow removed, strokes made solid, cropped to the ink, fitted into 20x20 pixels,
    centred by its centre of mass in 28x28. Exit status 1 if any input failed.

    \b
    Examples:
      mnist-bp predict runs/x/checkpoints/best.npz my-digit.jpg
      mnist-bp predict runs/x/checkpoints/best.npz photos/ --top 1 --save-inputs seen/
      mnist-bp predict runs/x/checkpoints/best.npz 1984.png --number --json
      cat digit.png | mnist-bp predict runs/x/checkpoints/best.npz -
    """
    from mnist_bp.model import load
    from mnist_bp.predict import (
        expand_inputs,
        format_table,
        shown_name,
        to_json,
        write_inputs,
    )

    model = load(checkpoint)
    named = expand_inputs(inputs)
    if not named:
        raise click.UsageError("no images found in " + " ".join(inputs))
    results = model.predict_paths([s for _, s in named], invert=invert, number=number,
                                  names=[n for n, _ in named])
    failed = [r for r in results if not r.ok]
    for r in failed:
        echo_err(f"Error: {shown_name(r.file)}: {r.error}")
    if as_json:
        click.echo(json.dumps(to_json(str(checkpoint), results, k)))
    elif len(failed) < len(results):
        click.echo(format_table(results, k))
    if save_inputs is not None:  # after the answers: a folder that cannot be written loses none
        written = write_inputs(results, save_inputs)
        echo_err(f"saved {len(written)} input image(s) in {save_inputs}")
    sys.exit(1 if failed else 0)


# --- explain -------------------------------------------------------------------------------

@main.command()
@click.argument("checkpoint", type=PATH)
@click.argument("inputs", nargs=-1, metavar="[IMAGE...]")
@click.option("--test", "n_test", type=click.IntRange(1, 10000), metavar="N",
              help="Explain the first N images of the checkpoint's test set.")
@click.option("--data-dir", type=PATH, help=DATA_DIR_HELP)
@click.option("--out", type=PATH, default=Path("explain"), show_default=True, metavar="DIR",
              help="Folder for NAME.png and NAME.npy (never replacing a file: a taken name "
                   "gets ~2, ~3...).")
@click.option("--target", type=click.IntRange(0, 9), metavar="D",
              help="Explain class D [default: each image's predicted digit].")
@click.option("--method", type=click.Choice(["integrated-gradients", "gradient"]),
              help="integrated-gradients: from a blank image, the attributions sum to "
                   "p(x) - p(blank); gradient: d p / d pixel [default: integrated-gradients, "
                   "or gradient for checkpoints that standardise each image].")
@click.option("--steps", type=click.IntRange(1, 4096), default=64, show_default=True,
              help="Points on the path for integrated gradients.")
@click.option("--invert", type=click.Choice(["auto", "yes", "no"]), default="auto",
              show_default=True, help="As for predict: the polarity the network sees.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: checkpoint, method, explanations, errors.")
def explain(checkpoint, inputs, n_test, data_dir, out, target, method, steps, invert, as_json):
    """Show what the network looks at: which pixels raise or lower a digit's probability.

    The gradient of the target's probability is carried back through the network to every
    pixel (backpropagation one layer further). For each image, DIR/NAME.png shows the input
    as the network saw it and the attribution over it (red raises the probability, blue
    lowers it); DIR/NAME.npy holds the attribution, float32 [28, 28]. IMAGE as for predict
    (files, folders, - for standard input), or --test N. Exit status 1 if any image failed.

    \b
    Examples:
      mnist-bp explain runs/x/checkpoints/best.npz --test 16
      mnist-bp explain runs/x/checkpoints/best.npz my-digit.jpg --target 7
      mnist-bp explain runs/x/checkpoints/best.npz photos/ --method gradient --json
    """
    import numpy as np

    from mnist_bp.explain import check_method, explain_named, format_table
    from mnist_bp.imageprep import ImageError
    from mnist_bp.model import load
    from mnist_bp.predict import expand_inputs, shown_name

    if not inputs and n_test is None:
        raise click.UsageError("give images to explain, or --test N")
    model = load(checkpoint)
    chosen = check_method(model, method)
    if method is None and model.normalizer.per_image:
        echo_err(f"note: {checkpoint.name} standardises each image, where integrated "
                 f"gradients from a blank image are degenerate: showing the gradient")
    named, errors = [], []
    for name, source in expand_inputs(inputs):
        try:
            named.append((name, model.prepare(source, invert)[0].image))
        except ImageError as exc:
            errors.append({"file": name, "error": str(exc)})
    if n_test is not None:
        from mnist_bp.data.datadir import load_dataset

        test = load_dataset(model.cfg.data.dataset, data_dir, log=echo_err).test
        named += [(f"test-{i:05d}", np.asarray(test.images[i], np.float32) / 255)
                  for i in range(min(n_test, len(test)))]
    if inputs and not named and not errors:
        raise click.UsageError("no images found in " + " ".join(inputs))
    results = explain_named(model, named, out, target, chosen, steps, errors)
    for r in errors:
        echo_err(f"Error: {shown_name(r['file'])}: {r['error']}")
    if as_json:
        click.echo(json.dumps({"checkpoint": str(checkpoint), "method": chosen,
                               "explanations": results, "errors": errors}))
    elif results:
        click.echo(format_table([{**r, "file": shown_name(r["file"])} for r in results],
                                chosen))
    sys.exit(1 if errors else 0)


# --- report --------------------------------------------------------------------------------

@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=PATH, metavar="RUN_DIR...")
@click.option("--out", type=PATH, metavar="DIR",
              help="Folder to write [default: RUN_DIR/report/ for one run; required for "
                   "several].")
@click.option("--data-dir", type=PATH, help=DATA_DIR_HELP)
def report(run_dirs, out, data_dir):
    """Learning curves, confusion matrix and mistakes of runs, as PNG files and one HTML page.

    Writes report.html (self-contained: open it, attach it, publish it),
    learning_curves.png, confusion_matrix.png, mistakes.png and explain.png (what the
    network looks at). Several runs are overlaid
    and compared. The test set is scored with each run's checkpoints/best.npz. Needs
    matplotlib (pip install 'mnist-bp[plot]').

    \b
    Examples:
      mnist-bp report runs/20261127-101500-default
      mnist-bp report runs/a runs/b --out reports/a-vs-b
    """
    from mnist_bp.report import make_report

    folder = make_report(list(run_dirs), out, data_dir, log=echo_err)
    click.echo(f"report: {folder / 'report.html'}")


# --- serve ---------------------------------------------------------------------------------

@main.command()
@click.argument("checkpoints", nargs=-1, required=True, type=PATH, metavar="CHECKPOINT...")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface, so anyone who can reach "
                   "the computer on the network).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port (0 picks a free one).")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a browser.")
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME",
              help="Also answer requests whose Host header is NAME (repeatable), e.g. the "
                   "computer's name with --host 0.0.0.0. On loopback only 127.0.0.1, "
                   "localhost and [::1] are answered otherwise (403).")
def serve(checkpoints, host, port, open_browser, allow_hosts):
    """Draw a digit in the browser and watch the networks answer; a JSON API.

    Every CHECKPOINT is loaded once and answers side by side. The page (GET /) has a
    drawing canvas with ink and paper colours; the API: POST /api/predict with an image's
    bytes as the body (optional ?invert=auto|yes|no, default auto), POST /api/explain (the
    same body: what each network looks at), GET /api/models, GET /healthz. Stops cleanly on
    Ctrl-C or SIGTERM. Needs the serve extra (pip install 'mnist-bp[serve]').

    \b
    Examples:
      mnist-bp serve runs/default/checkpoints/best.npz runs/robust/checkpoints/best.npz --open
      curl --data-binary @digit.png http://127.0.0.1:8000/api/predict
    """
    from mnist_bp.serve import LOOPBACK
    from mnist_bp.serve import serve as run_server

    if host not in LOOPBACK:
        echo_err(f"note: listening on {host}: anyone who can reach this computer can use it")
    run_server(list(checkpoints), host, port, open_browser, lambda line: click.echo(line),
               allow_hosts)


# --- tune ----------------------------------------------------------------------------------

@main.command()
@click.argument("config", metavar="CONFIG")
@click.option("--space", "space", type=PATH, required=True, metavar="SPACE.yaml",
              help="Search space: dotted config keys -> {low, high[, log, step]} or {choices}.")
@click.option("--trials", type=click.IntRange(1), default=20, show_default=True,
              help="Finished trials (COMPLETE or PRUNED) the study should reach, counting "
                   "every worker's.")
@click.option("--timeout", type=click.FloatRange(min=0), metavar="SECONDS",
              help="Start no new trial after this many seconds.")
@click.option("--study", "study_name", metavar="NAME",
              help="Study name [default: the config's name].")
@click.option("--storage", metavar="URL",
              help="Where the study lives: a database URL for many machines "
                   "(postgresql://..., mysql://..., sqlite:///...), or an SQLite file of "
                   "mnist-bp's [default: OUT/study.db].")
@click.option("--out", metavar="DIR",
              help="Output folder [default: tune/<time>-<config name>/]; the same OUT again "
                   "continues the study.")
@click.option("--data-dir", type=PATH, help=DATA_DIR_HELP)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a key of CONFIG for every trial, e.g. --set data.validation=1000.")
@click.option("--verbose", is_flag=True,
              help="Show Optuna's own log lines and the libraries' warnings.")
def tune(config, space, trials, timeout, study_name, storage, out, data_dir, overrides,
         verbose):
    """Search hyperparameters with Optuna: each trial is a training run.

    Trials are scored by their best validation accuracy (CONFIG needs data.validation > 0)
    and pruned when they fall behind. OUT gets trials.csv, best.yaml (train it with
    mnist-bp train OUT/best.yaml), trials/<n>/ (each trial's run directory) and the study's
    storage. Start the same command with the same --out again (or on other machines with
    the same --storage) to add workers, or to continue with a larger --trials. Needs the
    tune extra (pip install 'mnist-bp[tune]').

    \b
    Examples:
      mnist-bp tune default --space space.yaml --trials 20 --set data.validation=1000
      mnist-bp tune default --space space.yaml --out tune/lr &   # two workers,
      mnist-bp tune default --space space.yaml --out tune/lr     # one study
    """
    from mnist_bp.config import load_config, to_dict
    from mnist_bp.training import Interrupted
    from mnist_bp.tune import tune as run_tune

    cfg, source = load_config(config, overrides)
    try:
        folder = run_tune(to_dict(cfg), source.stem, space, trials=trials, timeout=timeout,
                          study_name=study_name, storage_url=storage, out=out,
                          data_dir=data_dir, log=echo_err, table=click.echo,
                          verbose=verbose)
    except Interrupted:
        echo_err("\ninterrupted: the running trial is marked FAIL; run the same command "
                 "with the same --out again to continue the study")
        sys.exit(130)
    click.echo(f"trials: {folder / 'trials.csv'}")
    if (folder / "best.yaml").is_file():
        click.echo(f"best: {folder / 'best.yaml'}")


# --- export --------------------------------------------------------------------------------

@main.command()
@click.argument("checkpoint", type=PATH)
@click.argument("out", type=PATH)
@click.option("--format", "fmt", type=click.Choice(["onnx", "safetensors"]),
              help="Output format [default: from OUT's suffix, .onnx or .safetensors].")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def export(checkpoint, out, fmt, force):
    """Write a trained network for other runtimes: ONNX or safetensors.

    ONNX: one graph from raw pixels to answers. Input 'images' float32 [N, 28, 28], pixel
    values in [0, 1] as MNIST stores them (white digit on black); the checkpoint's input
    normalisation is inside the graph; outputs 'probabilities' [N, 10] and 'digit' [N].
    safetensors: the parameters under the checkpoint's names (layers.<i>.W, layers.<i>.b),
    config and normalisation in the metadata. An existing OUT is replaced only with --force.
    Needs the export extra (pip install 'mnist-bp[export]').

    \b
    Examples:
      mnist-bp export runs/x/checkpoints/best.npz x.onnx
      mnist-bp export runs/x/checkpoints/best.npz weights.safetensors
    """
    from mnist_bp.export import export as write
    from mnist_bp.model import load

    path = write(load(checkpoint), out, fmt, force)
    click.echo(f"wrote {path}")


# --- augment-preview -----------------------------------------------------------------------

@main.command("augment-preview")
@click.argument("config", required=False, metavar="[CONFIG]")
@click.option("--data-dir", type=PATH, help=DATA_DIR_HELP)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set augment.elastic.p=1.")
@click.option("--out", type=PATH, default=Path("augment-preview.png"), show_default=True,
              help="PNG file to write.")
@click.option("--count", type=click.IntRange(1, 400), default=32, show_default=True,
              help="How many training images to show.")
def augment_preview(config, data_dir, overrides, out, count):
    """Write a PNG grid of training images and their augmented versions.

    Each row of originals is followed by the same images as the network sees them in the
    first training batch (the config's augment section, the run's seed).

    \b
    Example:
      mnist-bp augment-preview configs/mnist-robust.yaml --out preview.png
    """
    from mnist_bp.config import load_config
    from mnist_bp.preview import write_preview

    cfg, _ = load_config(config, overrides)
    write_preview(cfg, data_dir, out, count)
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
