"""`mnist-bp tune`: hyperparameter search with Optuna, on one machine or many.

    mnist-bp tune default --space space.yaml --trials 20 --set data.validation=1000
    mnist-bp tune default --space space.yaml --trials 20 --out tune/x   # again: continues
    mnist-bp tune default --space space.yaml --storage postgresql://host/db   # many machines

SPACE.yaml maps dotted config keys to `{low, high}` (float or int by the key's type; optional
`log: true`, `step`) or `{choices: [...]}`. Each trial is an ordinary training run in
OUT/trials/<number>/, scored by its best validation accuracy, pruned when it falls behind
(Optuna's median pruner, fed every epoch's validation accuracy, from the second epoch on).

The study lives in an SQLite file, OUT/study.db (or the file `--storage PATH`), or in the
database a `--storage` URL names (`postgresql://...`): the same code path, Optuna's
`RDBStorage` with its heartbeats, so a worker that dies on any machine has its trial failed
by the others once its heartbeat is older than the grace period. The steps, each a function:
open the study (`open_study`: refuse what is not ours, fix the space), fail dead workers'
trials (`fail_dead_trials`), run one trial (`run_one`, through `study.optimize` so that
Optuna keeps the heartbeat), record it (`write_outputs`). Optuna is the `tune` extra,
imported only here.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import logging
import math
import os
import re
import sqlite3
import stat
import time
import typing
import warnings
from dataclasses import fields, is_dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from mnist_bp.config import (
    Config,
    ConfigError,
    dump_yaml,
    from_dict,
    read_yaml,
    set_key,
    show_value,
    to_dict,
    with_value,
)
from mnist_bp.errors import UserError
from mnist_bp.fsutil import atomic_write, locked
from mnist_bp.training import NullReporter, run

INSTALL_HINT = "install the tune extra: pip install 'mnist-bp[tune]' (optuna)"
SPEC_KEYS = {"low", "high", "log", "step", "choices"}
STUDY_FILE = "study.db"  # the study's SQLite file in OUT, without --storage
OLD_JOURNAL = "study.journal"  # where mnist-bp kept studies before
SPACE_ATTR = "mnist_bp.space"  # study user attribute: the space, and the mark of our studies
WORKER_ATTR = "mnist_bp.worker"  # trial user attribute: its objective has started
SQLITE_MAGIC = b"SQLite format 3\x00"
OPTUNA_TABLES = {"studies", "trials", "version_info", "study_user_attributes"}


# --- the search space ------------------------------------------------------------------------

def config_fields(cls=Config, prefix: str = "") -> dict[str, type]:
    """Every dotted config key and its type, e.g. {"optimizer.learning_rate": float}."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if is_dataclass(hints[f.name]):
            out.update(config_fields(hints[f.name], key))
        else:
            out[key] = hints[f.name]
    return out


def load_space(path: Path, base: dict) -> dict[str, dict]:
    """The validated search space: {dotted key: spec}. Errors name the file and the key."""
    import difflib

    path = Path(path)
    what = ("a search space maps dotted config keys to {low, high} or {choices: [...]}, e.g. "
            "optimizer.learning_rate: {low: 1e-4, high: 1e-2, log: true}")
    try:
        raw = read_yaml(path, what)
    except ConfigError as exc:
        raise UserError(str(exc).replace("config file not found", "search space not found")
                        .split(" (shipped configs")[0]) from None
    if not raw:
        raise UserError(f"{path}: {what}")
    known = config_fields()
    base_cfg = from_dict(base)
    space = {}
    for key, spec in raw.items():
        key = str(key)[:200]
        where = f"{path}: {key}"
        if key not in known:
            near = difflib.get_close_matches(key, list(known), n=1)
            hint = f"; did you mean '{near[0]}'?" if near else ""
            raise UserError(f"{where}: unknown config key{hint}")
        if not isinstance(spec, dict) or not spec:
            raise UserError(f"{where}: give {{low: A, high: B}} or {{choices: [...]}}")
        extra = set(spec) - SPEC_KEYS
        if extra:
            raise UserError(f"{where}: unknown field '{sorted(map(str, extra))[0][:60]}' (allowed: "
                            f"{', '.join(sorted(SPEC_KEYS))})")
        kind = known[key]
        if "choices" in spec:
            if set(spec) != {"choices"} or not isinstance(spec["choices"], list) \
                    or not spec["choices"]:
                raise UserError(f"{where}: choices must be a non-empty list, alone")
            values = spec["choices"]
        else:
            if "low" not in spec or "high" not in spec:
                raise UserError(f"{where}: a range needs both low and high")
            if kind not in (int, float):
                raise UserError(f"{where}: {key} is not a number; give choices instead")
            low, high = _number(spec["low"]), _number(spec["high"])
            for name, value in (("low", low), ("high", high)):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise UserError(f"{where}: {name} must be a number, not {show_value(value)}")
                try:
                    finite = math.isfinite(float(value))
                except OverflowError:
                    finite = False
                if not finite:
                    raise UserError(f"{where}: {name} must be a finite number of reasonable "
                                    f"size, not {show_value(value)}")
                if kind is int and not float(value).is_integer():
                    raise UserError(f"{where}: {key} takes whole numbers; {name} is {value}")
            if not low < high:
                raise UserError(f"{where}: low ({low}) must be below high ({high})")
            if spec.get("log") and low <= 0:
                raise UserError(f"{where}: a log range needs low > 0 (it is {low})")
            step = _number(spec.get("step"))
            if "step" in spec and (isinstance(step, bool) or not isinstance(step, (int, float))
                                   or not 0 < _finite(step) < float("inf")):
                raise UserError(f"{where}: step must be a positive number")
            if "step" in spec and kind is int and not float(step).is_integer():
                raise UserError(f"{where}: {key} takes whole numbers; step is {step}")
            if spec.get("log") and "step" in spec:
                raise UserError(f"{where}: use log or step, not both")
            values = [kind(low), kind(high)]
            spec = {**spec, "low": kind(low), "high": kind(high), "kind": kind.__name__}
            if "step" in spec:
                spec["step"] = step
        for value in values:  # each end of the range, each choice must make a valid config
            try:
                with_value(base_cfg, key, value)  # this key alone: microseconds a value
            except ConfigError as exc:
                raise UserError(f"{path}: {exc}") from None
        space[key] = spec
    return space


def _number(value):
    """YAML 1.1 reads 1e-4 (no dot) as a string: such a string becomes the number it says."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _finite(value) -> float:
    """`value` as a float, or inf when it is too large for one."""
    try:
        return float(value)
    except OverflowError:
        return float("inf")


def suggest(trial, space: dict[str, dict]) -> dict:
    """The trial's value of every searched key (lists are searched as JSON strings)."""
    values = {}
    for key, spec in space.items():
        if "choices" in spec:
            options = [json.dumps(c) if isinstance(c, (list, dict)) else c
                       for c in spec["choices"]]
            value = trial.suggest_categorical(key, options)
            values[key] = json.loads(value) if isinstance(value, str) and \
                value[:1] in "[{" else value
        elif spec["kind"] == "int":
            values[key] = trial.suggest_int(key, spec["low"], spec["high"],
                                            step=int(spec.get("step", 1)),
                                            log=bool(spec.get("log", False)))
        else:
            values[key] = trial.suggest_float(key, spec["low"], spec["high"],
                                              step=spec.get("step"),
                                              log=bool(spec.get("log", False)))
    return values


# --- storage: one study file of ours, or the database a URL names ------------------------------

def require_optuna(verbose: bool = False):
    try:
        import optuna
    except ImportError:
        raise UserError(f"tune needs optuna; {INSTALL_HINT}") from None
    if verbose:
        optuna.logging.set_verbosity(optuna.logging.INFO)
    else:  # tune's own table and errors are the output; Optuna's log lines are --verbose's
        optuna.logging.set_verbosity(optuna.logging.CRITICAL)
        logging.getLogger("sqlalchemy").setLevel(logging.CRITICAL)
    return optuna


def heartbeat_settings() -> tuple[int, int]:
    """(heartbeat_interval, grace_period) in seconds: 10 and 60, or
    `$MNIST_BP_TUNE_HEARTBEAT` as "INTERVAL,GRACE" (shorter for tests)."""
    text = os.environ.get("MNIST_BP_TUNE_HEARTBEAT", "")
    try:
        interval, grace = (int(x) for x in text.split(","))
        if 0 < interval < grace:
            return interval, grace
    except ValueError:
        pass
    return 10, 60


def shown_url(url: str) -> str:
    """A storage URL as messages show it: the password hidden."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def storage_url(out: Path, storage: str | None) -> tuple[str, Path | None]:
    """(the URL Optuna opens, the study file when it is one of ours): OUT/study.db by
    default, an SQLite file for `--storage PATH`, a URL (`sqlite:///...`, `postgresql://...`)
    used as given."""
    if storage is not None and "://" in storage:
        return storage, None
    path = Path(storage) if storage else out / STUDY_FILE
    if storage is None and not path.exists() and (out / OLD_JOURNAL).exists():
        raise UserError(f"{out / OLD_JOURNAL}: a study of an older mnist-bp (a journal file), "
                        f"which this one does not read; start a new study with another --out")
    check_study_file(path)
    return f"sqlite:///{path.resolve()}", path


def check_study_file(path: Path) -> None:
    """Refuse, untouched, a file that is not a study of this tool: anything but a regular
    file, a file that is not SQLite, an SQLite database without Optuna's tables, or one
    holding a study that mnist-bp did not make. A missing file is fine (it is created)."""
    fix = "give another --storage, or another --out"
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise UserError(f"{path}: cannot use it as a study ({exc.strerror}); {fix}") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise UserError(f"{path}: {kind}, not a study of mnist-bp tune; {fix}")
    try:  # non-blocking: a FIFO swapped in after the stat still cannot hang us
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise UserError(f"{path}: not a regular file, not a study of mnist-bp tune; "
                                f"{fix}")
            head = os.read(fd, len(SQLITE_MAGIC))
        finally:
            os.close(fd)
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror}); {fix}") from None
    if head != SQLITE_MAGIC:
        raise UserError(f"{path}: not an SQLite database, so not a study of mnist-bp tune; "
                        f"it is left as it is; {fix}")
    try:
        uri = f"file:{path.resolve()}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=30)) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE "
                                               "type='table'")}
            if not tables >= OPTUNA_TABLES:
                raise UserError(f"{path}: an SQLite database that is not an Optuna study; it "
                                f"is left as it is; {fix}")
            marked = {r[0] for r in db.execute(
                "SELECT study_id FROM study_user_attributes WHERE key = ?", (SPACE_ATTR,))}
            for study_id, name in db.execute("SELECT study_id, study_name FROM studies"):
                if study_id not in marked:
                    raise UserError(f"{path}: holds the study {str(name)[:80]!r}, which mnist-bp "
                                    f"tune did not make; it is left as it is; {fix}")
    except sqlite3.Error as exc:
        raise UserError(f"{path}: cannot read it as an SQLite database ({exc}); it is left as "
                        f"it is; {fix}") from None


def make_storage(optuna, url: str):
    """Optuna's RDBStorage with heartbeats: a worker whose trial's heartbeat is older than the
    grace period is dead, whichever machine it ran on."""
    interval, grace = heartbeat_settings()
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        return optuna.storages.RDBStorage(url, heartbeat_interval=interval,
                                          grace_period=grace, engine_kwargs=kwargs)
    except Exception as exc:  # noqa: BLE001 - any driver or connection error, one line
        raise UserError(f"--storage {shown_url(url)}: cannot open it ({type(exc).__name__}: "
                        f"{shown_url(str(exc).splitlines()[0][:200])}); check the URL and that "
                        "its database driver is installed (pip install 'mnist-bp[tune]')") \
            from None


def space_record(space: dict[str, dict]) -> str:
    """The space as stored with the study: canonical JSON of every key's spec."""
    return json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "kind"}
                       for k, v in sorted(space.items())}, sort_keys=True)


def open_study(optuna, storage, study_name: str, space: dict, seed: int, where: str):
    """Load the study, or create it holding `space`; a study made with another space (or not
    by mnist-bp, in a file of ours) is one line saying how to start a new one."""
    sampler = optuna.samplers.TPESampler(seed=seed)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)
    study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize",
                                load_if_exists=True, sampler=sampler, pruner=pruner)
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise UserError(f"{where}: the study {study_name!r} minimises its objective, so it is "
                        f"not a study of mnist-bp tune; name another with --study NAME")
    stored = study.user_attrs.get(SPACE_ATTR)
    record = space_record(space)
    if stored is None:  # a new study, or one a URL names that we adopt as given
        study.set_user_attr(SPACE_ATTR, record)
    elif stored != record:
        keys = sorted(json.loads(stored)) if stored.startswith("{") else []
        raise UserError(f"{where}: the study {study_name!r} searches another space "
                        f"({', '.join(keys)[:200]}); a study's space is fixed: use the same "
                        f"space file, or start a new study in another --out (with --storage: "
                        f"under another --study NAME)")
    return study


# --- workers -------------------------------------------------------------------------------------

def fail_dead_trials(optuna, study, log) -> int:
    """FAIL the RUNNING trials of workers that are gone: Optuna's heartbeats find those that
    beat and stopped; a trial whose objective never started (its worker died between drawing
    it and its first heartbeat) is failed once it is older than the grace period: the one
    rule of ours on top of the storage's."""
    from optuna.trial import TrialState

    _, grace = heartbeat_settings()
    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    optuna.storages.fail_stale_trials(study)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    for number in sorted(before - {t.number for t in running}):
        if by_number[number].state == TrialState.FAIL:
            log(f"trial {number}: its worker stopped (no heartbeat for {grace} s); marked FAIL")
    now = datetime.now()
    failed = 0
    for t in running:
        if WORKER_ATTR in t.user_attrs or t.datetime_start is None:
            continue
        if now - t.datetime_start > timedelta(seconds=grace):
            with contextlib.suppress(Exception):  # another worker may have done it first
                study.tell(t.number, state=TrialState.FAIL)
                failed += 1
                log(f"trial {t.number}: its worker died before its first heartbeat; "
                    f"marked FAIL")
    return failed


class AskLock:
    """Workers on one OUT count the study's trials and draw the next one under this lock, so
    that together they never start more trials than asked for; released as soon as the
    trial is drawn (`release`), or when the block ends."""

    def __init__(self, out: Path):
        self.path = Path(out) / ".ask.lock"
        self.file = None

    def __enter__(self):
        self.file = open(self.path, "a")  # noqa: SIM115 - released in release()
        fcntl.flock(self.file.fileno(), fcntl.LOCK_EX)
        return self

    def release(self) -> None:
        if self.file is not None:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_UN)
            self.file.close()
            self.file = None

    def __exit__(self, *exc):
        self.release()


def worker_number(out: Path) -> int:
    """0 for the first worker on OUT, 1 for the next...: seeds the sampler, so that workers
    differ and a single worker's study repeats."""
    with locked(out, ".workers.lock"):
        path = out / ".workers"
        n = int(path.read_text() or 0) if path.exists() else 0
        path.write_text(str(n + 1))
    return n


class TrialReporter(NullReporter):
    """Training's reporter for a trial: feeds each epoch's validation accuracy to the
    pruner, and stops the run when the pruner says so."""

    def __init__(self, trial, optuna, log, warned: set):
        self.trial, self.optuna = trial, optuna
        self.log, self.warned = log, warned  # warned: lines already said in this study

    def warn(self, message: str) -> None:
        if message not in self.warned:
            self.warned.add(message)
            self.log(f"Warning: {message}")

    def epoch_end(self, row, epochs, n_train):
        self.trial.report(row["val_acc"], row["epoch"])
        if self.trial.should_prune():
            raise self.optuna.TrialPruned(f"pruned after epoch {row['epoch']}")


class DuplicateParameters(Exception):
    """A drawn trial repeats an earlier one's parameters: it is FAIL, and another is drawn."""


def same_params(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        (np.isclose(a[k], b[k], rtol=1e-12, atol=0) if isinstance(a[k], float)
         and isinstance(b[k], float) else a[k] == b[k]) for k in a)


def duplicate_of(study, number: int, params: dict):
    """An earlier-numbered live or finished trial with the same parameters, if any."""
    from optuna.trial import TrialState

    for other in study.get_trials(deepcopy=False):
        if other.number >= number or other.state == TrialState.FAIL:
            continue
        if same_params(other.params, params):
            return other
    return None


def run_one(optuna, study, lock: AskLock, cfg_raw: dict, config_name: str, space: dict,
            out: Path, data_dir, log, warned: set) -> tuple:
    """Run one trial through `study.optimize` (Optuna draws it, keeps its heartbeat and
    records its end); returns (trial number, state, value, seconds, params)."""
    result = {}

    def objective(trial):
        lock.release()  # drawn: other workers may draw theirs
        trial.set_user_attr(WORKER_ATTR, True)  # the heartbeat thread is running now
        params = suggest(trial, space)
        result.update(number=trial.number, params=params)
        twin = duplicate_of(study, trial.number, params)
        if twin is not None:
            raise DuplicateParameters(f"trial {trial.number}: same parameters as trial "
                                      f"{twin.number}; drawn again")
        raw = json.loads(json.dumps(cfg_raw))
        for key, value in params.items():
            set_key(raw, key, value)
        cfg = from_dict(raw)
        trial.set_user_attr("config", to_dict(cfg))
        start = time.perf_counter()
        try:
            summary = run(cfg, out / "trials" / str(trial.number), data_dir,
                          config_name=f"{config_name}-trial",
                          reporter=TrialReporter(trial, optuna, log, warned), score_test=False)
        finally:
            result["seconds"] = time.perf_counter() - start
            trial.set_user_attr("seconds", result["seconds"])
        return summary["best_val_accuracy"]

    study.optimize(objective, n_trials=1, catch=(DuplicateParameters,), gc_after_trial=False,
                   show_progress_bar=False)
    trial = next((t for t in study.get_trials(deepcopy=False)
                  if t.number == result.get("number")), None)
    return trial, result


# --- the study -----------------------------------------------------------------------------------

def tune(cfg_raw: dict, config_name: str, space_path: Path, *, trials: int,
         timeout: float | None, study_name: str | None, storage_url: str | None,
         out: Path | None, data_dir, log=print, table=print, verbose: bool = False) -> Path:
    """Run trials until the study holds `trials` finished ones (or `timeout` passes)."""
    base = from_dict(cfg_raw)
    if base.data.validation <= 0:
        raise UserError(f"{config_name}: data.validation is 0, but tune scores trials on a "
                        "validation split; add --set data.validation=1000 (images held out of "
                        "the training files)")
    space = load_space(space_path, cfg_raw)
    optuna = require_optuna(verbose)
    out = Path(out) if out else Path("tune") / f"{time.strftime('%Y%m%d-%H%M%S')}-{config_name}"
    with warnings.catch_warnings():
        if not verbose:  # Optuna's ExperimentalWarning, SQLAlchemy's, any UserWarning
            warnings.simplefilter("ignore")
        return _tune(optuna, cfg_raw, config_name, space, space_path, trials, timeout,
                     study_name or config_name, storage_url, out, base.seed, data_dir, log,
                     table)


def _tune(optuna, cfg_raw, config_name, space, space_path, trials, timeout, study_name,
          storage, out: Path, seed, data_dir, log, table) -> Path:
    from optuna.trial import TrialState

    url, study_file = storage_url(out, storage)
    out.mkdir(parents=True, exist_ok=True)
    where = str(study_file) if study_file else shown_url(url)
    with locked(out, ".open.lock"):  # two workers starting at once create the file once
        if study_file is not None:
            check_study_file(study_file)
        sampler_seed = int(np.random.SeedSequence([seed, worker_number(out)])
                           .generate_state(1)[0])
        study = open_study(optuna, make_storage(optuna, url), study_name, space, sampler_seed,
                           where)
    warned: set[str] = set()
    log(f"study {study.study_name} in {where}; trials in {out / 'trials'}")
    started = time.monotonic()
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    drawn = 0
    while True:
        if timeout is not None and time.monotonic() - started > timeout:
            log(f"timeout: {timeout:g} s passed; no new trials")
            break
        with AskLock(out) as lock:
            fail_dead_trials(optuna, study, log)
            done = len(study.get_trials(deepcopy=False, states=finished))
            running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
            if done + running >= trials:
                lock.release()
                if not running:
                    break
                # others are finishing the last trials: each ends, or is found dead within
                # the grace period by fail_dead_trials above
                time.sleep(min(heartbeat_settings()[0], 2.0))
                continue
            try:
                trial, result = run_one(optuna, study, lock, cfg_raw, config_name, space, out,
                                        data_dir, log, warned)
            finally:
                write_outputs(study, space, out)
        drawn += 1
        if trial is not None and trial.state == TrialState.FAIL:
            log(f"trial {trial.number}: same parameters as an earlier trial; drawn again")
            if drawn > 20 * trials:
                raise UserError(f"{space_path}: the search space has no new parameters left; "
                                "widen it or ask for fewer trials")
            continue
        if trial is not None:
            table(trial_line(trial.number, trial.state.name, trial.value,
                             result.get("seconds", 0.0), result["params"]))
    write_outputs(study, space, out)
    return out


def trial_line(number, state, value, seconds, params) -> str:
    shown = " ".join(f"{k}={format_value(v)}" for k, v in params.items())
    val = f"{value:.4f}" if value is not None else "  -   "
    return f"trial {number:>3}  {state:<8}  val_acc {val}  {seconds:7.1f} s  {shown}"


def format_value(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def write_outputs(study, space: dict, out: Path) -> None:
    """trials.csv (every trial of every worker), best.yaml, and the study plot if matplotlib
    is there; each written atomically."""
    from optuna.trial import TrialState

    all_trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    keys = list(space)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["number", "state", "value", "seconds", *keys])
    for t in all_trials:
        seconds = t.user_attrs.get("seconds")
        if seconds is None and t.datetime_start and t.datetime_complete:
            seconds = (t.datetime_complete - t.datetime_start).total_seconds()
        writer.writerow([t.number, t.state.name, "" if t.value is None else t.value,
                         "" if seconds is None else f"{seconds:.2f}",
                         *[t.params.get(k, "") for k in keys]])
    with atomic_write(out / "trials.csv", "w") as f:
        f.write(buf.getvalue())
    complete = [t for t in all_trials if t.state == TrialState.COMPLETE and t.value is not None]
    if complete:
        best = max(complete, key=lambda t: (t.value, -t.number))
        cfg = from_dict(best.user_attrs["config"])
        with atomic_write(out / "best.yaml", "w") as f:
            f.write(f"# best trial {best.number} of study {study.study_name}: validation "
                    f"accuracy {best.value:.4f}\n# train it: mnist-bp train {out / 'best.yaml'}\n")
            f.write(dump_yaml(cfg))
        plot_study(complete, out)


def plot_study(complete, out: Path) -> None:
    try:
        from mnist_bp.report import png, require_matplotlib

        plt = require_matplotlib()
    except UserError:
        return
    numbers = [t.number for t in complete]
    values = [t.value for t in complete]
    fig, ax = plt.subplots(figsize=(7, 3.8), constrained_layout=True)
    ax.scatter(numbers, values, color="#0072B2", label="trial (complete)")
    ax.step(numbers, np.maximum.accumulate(values), where="post", color="#D55E00",
            label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    data = png(fig)
    plt.close(fig)
    with atomic_write(out / "study.png") as f:
        f.write(data)
