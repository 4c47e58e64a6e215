"""The training loop: epochs of shuffled mini-batches, validation, early stopping, checkpoints.

    mnist-bp train configs/default.yaml --data-dir D --run-dir runs/x
    mnist-bp train --resume runs/x/checkpoints/last.npz

`Trainer.train_epoch` and `Trainer.evaluate` return metrics as dicts; `run` writes the run
directory (config.yaml, metrics, checkpoints, summary.json) and reports through a reporter
object, so printing stays at the edge (cli.py).
"""

from __future__ import annotations

import json
import math
import signal
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mnist_bp import checkpoint, limits, precision, rng, rundir
from mnist_bp.config import Config, dump_yaml, to_dict
from mnist_bp.data.augment import is_active
from mnist_bp.data.batches import BatchMaker, Normalizer
from mnist_bp.errors import UserError
from mnist_bp.metrics import write_history, write_summary
from mnist_bp.model import build_network, load, read
from mnist_bp.nn.losses import make_loss
from mnist_bp.nn.optimizers import Momentum, clip_grad_norm, make_optimizer
from mnist_bp.nn.schedules import learning_rate
from mnist_bp.scoring import evaluate


class Interrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after saving `checkpoint`."""

    def __init__(self, checkpoint_path: Path):
        super().__init__(str(checkpoint_path))
        self.checkpoint = checkpoint_path


class Diverged(UserError):
    pass


@dataclass
class RunState:
    """Where training is; everything the checkpoint needs besides the arrays."""

    epoch: int = 0  # completed epochs
    step_in_epoch: int = 0  # steps done in the unfinished epoch
    global_step: int = 0  # optimizer updates done in the whole run
    best_value: float | None = None
    best_epoch: int | None = None
    epochs_since_best: int = 0
    history: list = field(default_factory=list)
    partial: dict = field(default_factory=dict)  # sums of the unfinished epoch
    finished: bool = False
    stop_reason: str | None = None
    products: str | None = None  # who multiplied (precision.py), for a resume to compare


class Trainer:
    """Model, optimizer, loss and batch makers of one run."""

    def __init__(self, cfg: Config, train_split, val_split, normalizer: Normalizer,
                 products: precision.Products | None = None):
        self.cfg = cfg
        # products: numpy, onednn or onednn-bfloat16; note: why bfloat16 was not possible
        products = products or precision.resolve()
        self.products, self.precision_note = products.training(cfg.training.precision)
        self.model = build_network(cfg, self.products)
        self.dropout = cfg.model.dropout > 0 or cfg.model.input_dropout > 0
        self.params = self.model.parameters()
        self.optimizer = make_optimizer(self.params, cfg.optimizer)
        if isinstance(self.optimizer, Momentum) and cfg.training.clip_grad_norm == 0:
            self.optimizer.fuse_into(self.model.linears)
        self.grads = self.model.gradients()
        self.loss = make_loss(cfg.loss)
        self.normalizer = normalizer
        aug = cfg.augment if is_active(cfg.augment) else None
        self.train_maker = BatchMaker(train_split.images, train_split.labels, normalizer, aug)
        self.val_maker = (BatchMaker(val_split.images, val_split.labels, normalizer)
                          if val_split is not None else None)
        self.batch_size = cfg.training.batch_size
        self.steps_per_epoch = math.ceil(len(self.train_maker) / self.batch_size)
        # Preparing the next batch in a worker thread competes with BLAS's threads for the
        # cores (docs/benchmarks.md), and a plain gather and convert gains nothing from it.
        self.prefetch = cfg.training.prefetch and aug is not None

    def lr(self, global_step: int) -> float:
        cfg = self.cfg
        return learning_rate(cfg.schedule, cfg.optimizer.learning_rate, global_step,
                             self.steps_per_epoch, cfg.training.epochs)

    def train_step(self, x, y, global_step: int, dropout_rng) -> tuple[float, int]:
        """One forward/backward/update; returns (mean loss, correct predictions)."""
        out = self.model.forward(x, training=True, rng=dropout_rng)
        correct = int(np.count_nonzero(out.argmax(axis=1) == y))
        loss = self.loss.forward(out, y)
        if not math.isfinite(loss):
            raise Diverged(
                f"loss became {loss} at update {global_step + 1}; lower optimizer.learning_rate "
                f"(now {self.cfg.optimizer.learning_rate}), e.g. --set optimizer.learning_rate="
                f"{self.cfg.optimizer.learning_rate / 10:g}, or set training.clip_grad_norm")
        self.model.backward(self.loss.backward())
        if self.cfg.training.clip_grad_norm > 0:
            clip_grad_norm(self.grads, self.cfg.training.clip_grad_norm)
        self.optimizer.step(self.params, self.grads, self.lr(global_step))
        return loss, correct

    def prepare_batch(self, order: np.ndarray, epoch: int, step: int):
        """Batch `step` of the epoch: gathered, converted and augmented (its own random
        stream, so the result does not depend on when or in which thread this runs)."""
        index = order[step * self.batch_size:(step + 1) * self.batch_size]
        aug_rng = (rng.stream(self.cfg.seed, rng.AUGMENT, epoch, step)
                   if self.train_maker.augment_cfg else None)
        return self.train_maker.batch(index, aug_rng, slot=step % 2)

    def batches(self, order: np.ndarray, epoch: int, first: int):
        """Yield `(step, (x, y))` from step `first` to the end of the epoch. With `prefetch`,
        a worker thread prepares batch step + 1 (into the other of two buffer slots) while
        step runs: numpy releases the GIL, so gathering and augmenting overlap with the
        single-threaded parts of the step."""
        last = self.steps_per_epoch
        if not self.prefetch:
            for step in range(first, last):
                yield step, self.prepare_batch(order, epoch, step)
            return
        with ThreadPoolExecutor(1, thread_name_prefix="mnist-bp-batches") as pool:
            ahead = pool.submit(self.prepare_batch, order, epoch, first)
            for step in range(first, last):
                batch = ahead.result()
                if step + 1 < last:
                    ahead = pool.submit(self.prepare_batch, order, epoch, step + 1)
                yield step, batch

    def train_epoch(self, progress: RunState, should_stop, on_step=None) -> dict | None:
        """Run the rest of epoch `progress.epoch`; returns its metrics, or None if stopped."""
        cfg, epoch = self.cfg, progress.epoch
        n = len(self.train_maker)
        order = rng.stream(cfg.seed, rng.SHUFFLE, epoch).permutation(n)
        sums = progress.partial or {"loss_sum": 0.0, "correct": 0, "seen": 0, "train_seconds": 0.0}
        start = time.perf_counter() - sums["train_seconds"]
        batches = self.batches(order, epoch, progress.step_in_epoch)
        try:
            for step, (x, y) in batches:
                if should_stop():
                    sums["train_seconds"] = time.perf_counter() - start
                    progress.partial = sums
                    return None
                dropout_rng = (rng.stream(cfg.seed, rng.DROPOUT, epoch, step) if self.dropout
                               else None)
                loss, correct = self.train_step(x, y, progress.global_step, dropout_rng)
                sums["loss_sum"] += loss * len(y)
                sums["correct"] += correct
                sums["seen"] += len(y)
                progress.step_in_epoch = step + 1
                progress.global_step += 1
                if on_step:
                    on_step(step + 1, self.steps_per_epoch, sums, time.perf_counter() - start)
        finally:
            batches.close()  # waits for a batch still being prepared
        seconds = time.perf_counter() - start
        return {"train_loss": sums["loss_sum"] / sums["seen"],
                "train_acc": sums["correct"] / sums["seen"],
                "lr": self.lr(progress.global_step - 1), "train_seconds": seconds}

    def evaluate(self, maker: BatchMaker, transform=None) -> dict:
        return evaluate(self.model, self.loss, maker, self.cfg.training.eval_batch_size, transform)

    # checkpoints -----------------------------------------------------------------------
    def save(self, run: rundir.RunDir, name: str, progress: RunState) -> None:
        meta = {"config": to_dict(self.cfg), "progress": asdict(progress),
                "optimizer_steps": self.optimizer.t, "normalization": self.normalizer.to_dict(),
                "rng": "np.random.SeedSequence([seed, purpose, epoch, step]); see mnist_bp/rng.py"}
        with run.writing(name) as f:
            checkpoint.write(f, self.params, self.optimizer.state_arrays(), meta)

    def restore(self, params, optim_state, meta) -> None:
        """Load arrays whose shapes `load_resume` has checked."""
        self.model.load_parameters(params)
        self.optimizer.load_state(optim_state, meta["optimizer_steps"])


def write_epoch(run: rundir.RunDir, trainer: Trainer, progress: RunState, best: bool) -> None:
    """An epoch's files, in the order that keeps a killed run resumable: best.npz first (a
    run killed before last.npz follows resumes from the older last.npz and repeats the epoch,
    never losing a best epoch), last.npz as a link to the same bytes (no second write), then
    the metrics, never ahead of last.npz. Written in the training thread: serialising holds
    the GIL, which the training loop wants back after every numpy call."""
    try:
        if best:
            trainer.save(run, rundir.BEST, progress)
            run.link(rundir.BEST, rundir.LAST)
        else:
            trainer.save(run, rundir.LAST, progress)
        write_history(run, progress.history)
    except OSError as exc:
        raise UserError(f"{run.path}: could not write epoch {progress.epoch}'s checkpoint and "
                        f"metrics ({exc.strerror or exc}); make room there, then continue with "
                        f"--resume {run.last}") from None


def due(progress: RunState, improved: bool, every: int) -> bool:
    """Whether the epoch just recorded writes its checkpoint: an improved validation metric
    always does (best.npz must hold the best epoch), otherwise every `every` epochs and the
    last. Without a validation split every epoch is the best, so best.npz and last.npz are
    the same file, written on the same schedule. A run killed in between resumes from the
    last write and repeats the epochs after it, bit for bit."""
    return improved or progress.finished or progress.epoch % every == 0


def is_better(metric: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value < best if metric == "val_loss" else value > best


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop finishes its step, saves and stops.

    The handler is installed even where the shell started us with SIGINT ignored (a script's
    background job), so Ctrl-C and `kill -INT` always save the run.
    """

    def __init__(self):
        self.signum = None

    def __enter__(self):
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def __call__(self) -> bool:
        return self.signum is not None

    def __exit__(self, *exc):
        for s, handler in self._old.items():
            signal.signal(s, handler)


def new_run_dir(config_name: str, root: Path = Path("runs")) -> Path:
    return root / f"{time.strftime('%Y%m%d-%H%M%S')}-{config_name}"


def record_epoch(progress: RunState, row: dict, metric: str | None, cfg: Config) -> bool:
    """Close the epoch in `progress`: history, best metric, patience, finished.
    Returns whether this epoch is the best so far (always, without a validation split)."""
    progress.epoch += 1
    progress.step_in_epoch = 0
    progress.partial = {}
    progress.history.append(row)
    improved = metric is None or is_better(metric, row[metric], progress.best_value)
    if improved:
        progress.best_value = row[metric] if metric else None
        progress.best_epoch = progress.epoch
        progress.epochs_since_best = 0
    else:
        progress.epochs_since_best += 1
    patience = cfg.training.early_stopping_patience
    if progress.epoch >= cfg.training.epochs:
        progress.finished, progress.stop_reason = True, "all epochs done"
    elif patience and progress.epochs_since_best >= patience:
        progress.finished = True
        progress.stop_reason = f"early stopping: no better {metric} for {patience} epochs"
    return improved


def load_resume(path: Path, products: str = "numpy"):
    """(config, progress, run dir, arrays) of a checkpoint to resume, its shapes checked.
    Only a run's own RUN/checkpoints/last.npz (or best.npz) resumes, into that RUN: a
    checkpoint anywhere else would write into whatever folder holds it."""
    path = Path(path)
    # the arrays must fit the model and optimizer the config builds
    network, cfg, meta, optim_state = read(path, products)
    run_dir = rundir.run_of(path)  # RUN/checkpoints/last.npz
    if run_dir is None:
        raise checkpoint.CheckpointError(
            f"{path}: --resume takes a run's RUN/checkpoints/last.npz (it continues that run "
            f"in RUN); to train from a checkpoint elsewhere, copy its run directory")
    params = network.parameters()
    checkpoint.check_shapes(path, make_optimizer(params, cfg.optimizer).state_arrays(),
                            optim_state, "optimizer state")
    try:
        progress = RunState(**meta["progress"])
    except TypeError:
        raise checkpoint.CheckpointError(f"{path}: its training progress has unknown fields; "
                                         f"resume with the mnist-bp that wrote it") from None
    if (len(progress.history) != progress.epoch or progress.epoch > cfg.training.epochs
            or (progress.best_epoch or 0) > progress.epoch
            or (progress.finished and not progress.history)):
        raise checkpoint.CheckpointError(f"{path}: its training progress does not add up "
                                         f"(epoch {progress.epoch} of {cfg.training.epochs}); "
                                         f"use the run's own last.npz")
    return cfg, progress, run_dir, (params, optim_state, meta)


def start_run(cfg: Config, run: rundir.RunDir, config_name: str) -> None:
    """Write config.yaml into the (locked) run directory, before any data is loaded."""
    with run.writing(rundir.CONFIG, "w") as f:
        f.write(f"# resolved config of this run ({config_name}); pass it back as CONFIG\n")
        f.write(dump_yaml(cfg))


def run(cfg: Config | None, run_dir: Path | None, data_dir, *, config_name: str = "config",
        resume: Path | None = None, reporter=None, score_test: bool = True,
        tensorboard: bool = False) -> dict:
    """Train (or resume) a run; returns summary.json's content. `score_test=False` (tuning)
    leaves the test set alone: the summary's test numbers are null. One process at a time
    writes a run directory: a second is refused with a UserError naming the run. A new run
    that stops on an error before its first epoch leaves no run directory behind (only
    what was there before); Ctrl-C and SIGTERM save last.npz and keep it."""
    reporter = reporter or NullReporter()
    products = precision.resolve()  # once, here: a bad MNIST_BP_GEMM before anything is written
    state = None
    if resume is not None:
        cfg, progress, run_dir, state = load_resume(resume, products.float32)
    else:
        run_dir, progress = Path(run_dir) if run_dir else new_run_dir(config_name), RunState()
    folder = rundir.RunDir(run_dir)
    locked = False
    try:
        with folder.locked():
            locked = True
            return _locked_run(cfg, folder, data_dir, config_name, progress, state, reporter,
                               score_test, tensorboard, products)
    except BaseException as exc:
        if locked and state is None and progress.epoch == 0 \
                and not isinstance(exc, Interrupted) and not folder.last.exists():
            folder.remove_unfinished()
        raise


def _locked_run(cfg, run: rundir.RunDir, data_dir, config_name, progress, state, reporter,
                score_test, tensorboard, products) -> dict:
    if state is not None and progress.finished and (run / rundir.SUMMARY).is_file():
        reporter.info(f"run in {run.path} already finished after {progress.epoch} epoch(s) "
                      f"({progress.stop_reason}); nothing to resume")
        return json.loads(limits.read_bounded(run / rundir.SUMMARY, limits.RUN_FILE_BYTES,
                                              "summary"))
    if state is None:
        run.refuse_to_replace()
        start_run(cfg, run, config_name)
    else:  # a run written before its record was kept: its files are its own
        run.adopt_legacy()
    log = None
    if tensorboard or cfg.training.tensorboard:
        from mnist_bp.tracking import TensorBoardLog
        log = TensorBoardLog(run.subfolder(rundir.TENSORBOARD), cfg)
    summary = None
    try:
        summary = _train(cfg, run, data_dir, progress, state, reporter, score_test, log,
                         products)
        return summary
    finally:
        if log is not None:
            log.close(summary)


def _train(cfg: Config, run: rundir.RunDir, data_dir, progress: RunState, state, reporter,
           score_test: bool, log, products: precision.Products) -> dict:
    from mnist_bp.data.datadir import load_dataset, split_validation
    from mnist_bp.data.printed import with_printed

    reporter.info(f"run directory: {run.path}")

    dataset = load_dataset(cfg.data.dataset, data_dir, log=reporter.info)
    train_split, val_split = split_validation(dataset.train, cfg.data.validation)
    if cfg.data.printed:  # after the split: validation stays the dataset's own images
        train_split = with_printed(train_split)
    normalizer = (Normalizer(**state[2]["normalization"]) if state
                  else Normalizer.fit(cfg.data.normalize, train_split.images))
    trainer = Trainer(cfg, train_split, val_split, normalizer, products)
    precision.pin_blas_threads(trainer.products)  # the cores are the products' from here
    if trainer.precision_note:
        reporter.warn(trainer.precision_note)
    if state and progress.products not in (None, trainer.products):
        reporter.warn(f"this run multiplied by {progress.products} so far and goes on by "
                      f"{trainer.products}: its weights will differ from an uninterrupted "
                      f"run's")
    progress.products = trainer.products
    if state:
        if progress.step_in_epoch >= trainer.steps_per_epoch:
            raise checkpoint.CheckpointError(
                f"{run / rundir.CHECKPOINTS}: the checkpoint is at step {progress.step_in_epoch} "
                f"of an epoch of {trainer.steps_per_epoch}; use the run's own last.npz with its "
                f"own data")
        trainer.restore(*state)
        reporter.info(f"resuming at epoch {progress.epoch + 1}, step {progress.step_in_epoch} "
                      f"of {trainer.steps_per_epoch}")
    metric = cfg.training.early_stopping_metric if val_split is not None else None

    # A diverging run overflows before its loss turns non-finite; that is reported as one
    # clear error by train_step, not as numpy warnings.
    with _StopFlag() as stop, np.errstate(over="ignore", invalid="ignore"):
        while not progress.finished:
            epoch_start = time.perf_counter()
            earlier = progress.partial.get("train_seconds", 0.0)  # of a resumed epoch
            train = trainer.train_epoch(progress, stop, reporter.step_callback(
                progress.epoch + 1, cfg.training.epochs))
            if train is None:
                trainer.save(run, rundir.LAST, progress)
                raise Interrupted(run.last)
            val = trainer.evaluate(trainer.val_maker) if val_split is not None else None
            row = {"epoch": progress.epoch + 1, "train_loss": train["train_loss"],
                   "train_acc": train["train_acc"],
                   "val_loss": val["loss"] if val else None,
                   "val_acc": val["accuracy"] if val else None,
                   "lr": train["lr"], "train_seconds": train["train_seconds"],
                   "seconds": time.perf_counter() - epoch_start + earlier}
            best = record_epoch(progress, row, metric, cfg)
            if due(progress, best and metric is not None, cfg.training.checkpoint_every):
                write_epoch(run, trainer, progress, best)
            if log is not None:
                log.epoch(row, trainer.params)
            reporter.epoch_end(row, cfg.training.epochs, len(trainer.train_maker))

    return finish(trainer, progress, dataset.test if score_test else None, run, reporter)


def finish(trainer: Trainer, progress: RunState, test_split, run: rundir.RunDir,
           reporter) -> dict:
    """Score best.npz on the test split (unless it is None) and write summary.json."""
    start = time.perf_counter()
    test = {"accuracy": None, "loss": None, "n": 0}
    if test_split is not None:
        # best.npz as any command loads it: its own parameters and normalisation
        test = load(run.checkpoint).score(test_split.images,
                                                                 test_split.labels)
    history = progress.history
    best_row = history[progress.best_epoch - 1] if progress.best_epoch else history[-1]
    summary = {
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "best_epoch": progress.best_epoch,
        "best_val_accuracy": best_row["val_acc"],
        "best_val_loss": best_row["val_loss"],
        "epochs_run": progress.epoch,
        "stop_reason": progress.stop_reason,
        "final": history[-1],
        "train_seconds": sum(r["train_seconds"] for r in history),
        "total_seconds": sum(r["seconds"] for r in history) + time.perf_counter() - start,
        "dataset": trainer.cfg.data.dataset,
        "products": trainer.products,
        "test_images": test["n"],
        "run_dir": str(run.path),
    }
    write_summary(run, summary)
    reporter.finished(summary)
    return summary


class NullReporter:
    """Reports nothing (library use, tests)."""

    def info(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        warnings.warn(message, stacklevel=2)

    def step_callback(self, epoch: int, epochs: int):
        return None

    def epoch_end(self, row: dict, epochs: int, n_train: int) -> None:
        pass

    def finished(self, summary: dict) -> None:
        pass
