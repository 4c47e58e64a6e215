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

from mnist_bp import limits
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
from mnist_bp.rundir import Owned
from mnist_bp.training import Diverged, NullReporter, run

INSTALL_HINT = "install the tune extra: pip install 'mnist-bp[tune]' (optuna)"
SPEC_KEYS = {"low", "high", "log", "step", "choices"}
MAX_GRID = 10_000_000  # values a stepped range may have
MAX_STUDY_NAME = 200  # characters of a study name (Optuna's column holds 512)
MAX_REPEATS = 50  # draws in a row that repeat earlier parameters before tune gives up
OUT_STUDY = ".mnist-bp-study"  # OUT's study: its trials/<number>/ are that study's
STUDY_FILE = "study.db"  # the study's SQLite file in OUT, without --storage
OLD_JOURNAL = "study.journal"  # where mnist-bp kept studies before
SPACE_ATTR = "mnist_bp.space"  # study user attribute: the space, and the mark of our studies
WORKER_ATTR = "mnist_bp.worker"  # trial user attribute: its objective has started
SQLITE_MAGIC = b"SQLite format 3\x00"
OPTUNA_TABLES = {"studies", "trials", "version_info", "study_user_attributes"}
OPTUNA_ALL_TABLES = OPTUNA_TABLES | {
    "study_directions", "study_system_attributes", "trial_params", "trial_values",
    "trial_intermediate_values", "trial_user_attributes", "trial_system_attributes",
    "trial_heartbeats", "alembic_version", "sqlite_sequence", "sqlite_stat1"}


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
            seen = set()
            for value in values:
                token = json.dumps(value, sort_keys=True, default=str)
                if token in seen:
                    raise UserError(f"{where}: choices hold {show_value(value)} twice; list "
                                    f"each value once")
                seen.add(token)
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
            if "log" in spec and not isinstance(spec["log"], bool):
                raise UserError(f"{where}: log must be true or false, not "
                                f"{show_value(spec['log'])}")
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
            if "step" in spec and (float(high) - float(low)) / float(step) > MAX_GRID:
                raise UserError(f"{where}: a step of {step} makes more than {MAX_GRID:,} "
                                f"values; use a larger step, or none")
            values = [kind(low), kind(high)]
            spec = {**spec, "low": kind(low), "high": kind(high), "kind": kind.__name__}
            if "step" in spec:
                spec["step"] = step
        for value in values:  # each end of the range, each choice must make a valid config
            try:
                with_value(base_cfg, key, value)  # this key alone: microseconds a value
            except ConfigError as exc:
                raise UserError(f"{path}: {exc}") from None
            if key == "data.validation" and value <= 0:
                raise UserError(f"{where}: tune scores trials on a validation split; every "
                                f"value must be above 0, not {value}")
        space[key] = spec
    for corner in ("low", "high"):  # every key at its first value, then at its last
        cfg = base_cfg
        try:
            for key, spec in space.items():
                value = spec["choices"][0 if corner == "low" else -1] if "choices" in spec \
                    else spec[corner]
                cfg = with_value(cfg, key, value)
        except ConfigError as exc:
            raise UserError(f"{path}: the keys' {'first' if corner == 'low' else 'last'} "
                            f"values together make an invalid config: {exc}") from None
    return space


def space_size(space: dict[str, dict]) -> float:
    """How many distinct points the space has (inf where a float range has no step)."""
    size = 1.0
    for spec in space.values():
        if "choices" in spec:
            size *= len(spec["choices"])
        elif "step" in spec:
            size *= math.floor((spec["high"] - spec["low"]) / spec["step"] + 1e-9) + 1
        elif spec["kind"] == "int":
            size *= spec["high"] - spec["low"] + 1
        else:
            return math.inf
    return size


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
    url = re.sub(r"(://[^:/@]*:).*@", r"\1***@", url)
    return re.sub(r"(?i)(password=)[^&]*", r"\1***", url)


def storage_url(out: Path, storage: str | None) -> tuple[str, Path | None]:
    """(the URL Optuna opens, the study file when it is one of ours): OUT/study.db by
    default, an SQLite file for `--storage PATH`, a URL (`sqlite:///...`, `postgresql://...`)
    used as given."""
    if storage is not None and "://" in storage:
        if re.match(r"sqlite://(/?:memory:|/?$)", storage.split("?")[0]):
            raise UserError(f"--storage {storage}: an in-memory database holds no study beyond "
                            f"this process and no other worker can join it; give a file, e.g. "
                            f"sqlite:///tune.db, or leave --storage out")
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
        if stat.S_ISLNK(os.lstat(path).st_mode):
            raise UserError(f"{path}: a symbolic link, which would make the study somewhere "
                            f"else; it is left as it is; name the file itself, or {fix[5:]}")
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
        uri = f"file:{path.resolve()}?mode=ro&immutable=1"  # no -wal/-shm files made
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=30)) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE "
                                               "type='table'")}
            if not tables >= OPTUNA_TABLES:
                raise UserError(f"{path}: an SQLite database that is not an Optuna study; it "
                                f"is left as it is; {fix}")
            foreign = sorted(tables - OPTUNA_ALL_TABLES)
            if foreign:
                raise UserError(f"{path}: holds tables that are not Optuna's ("
                                f"{', '.join(foreign)[:80]}), so it is not a study of mnist-bp "
                                f"tune; it is left as it is; {fix}")
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
    try:
        study = optuna.create_study(study_name=study_name, storage=storage,
                                    direction="maximize", load_if_exists=True, sampler=sampler,
                                    pruner=pruner)
        stored = study.user_attrs.get(SPACE_ATTR)
        if stored is None:  # a new study, or one a URL names: ours only if it has no trials
            if study.get_trials(deepcopy=False):
                raise UserError(f"{where}: the study {study_name!r} was not made by mnist-bp "
                                f"tune (its trials hold no config); name another with --study "
                                f"NAME")
            study.set_user_attr(SPACE_ATTR, space_record(space))
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - a database that refuses: read-only, full...
        detail = shown_url(str(exc).splitlines()[0][:160]) if str(exc) else ""
        raise UserError(f"{where}: cannot open or write the study ({type(exc).__name__}: "
                        f"{detail}); check that it can be written") from None
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise UserError(f"{where}: the study {study_name!r} minimises its objective, so it is "
                        f"not a study of mnist-bp tune; name another with --study NAME")
    stored = study.user_attrs.get(SPACE_ATTR)
    if stored != space_record(space):
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


def claim_out(out: Path, study_name: str, where: str) -> None:
    """OUT holds one study's trial folders (trials/<number>/): a second study needs its own
    OUT. The first worker records which study OUT is for."""
    mark = out / OUT_STUDY
    record = json.dumps({"study": study_name, "storage": where})
    try:
        held = limits.read_bounded(mark, 64 * 1024, "study record").decode("utf-8", "replace")
    except UserError:
        held = None
    folder = Owned(out, "move it away, or give another --out")
    for name in ("trials.csv", "best.yaml", "study.png"):  # before any trial runs
        folder.check(name)
    if held is None:
        if (out / "trials").exists() or (out / "trials.csv").exists():
            raise UserError(f"{out}: holds trials that are not this study's; give another "
                            f"--out")
        with atomic_write(mark, "w") as f:
            f.write(record)
        return
    try:
        other = json.loads(held)
    except ValueError:
        other = {}
    if not isinstance(other, dict) or other.get("study") != study_name \
            or other.get("storage") != where:
        other = other if isinstance(other, dict) else {}
        raise UserError(f"{out}: holds the trials of the study "
                        f"{str(other.get('study'))[:80]!r} in {str(other.get('storage'))[:120]}"
                        f"; a study's trials need their own folder: give another --out")


def worker_number(out: Path) -> int:
    """0 for the first worker on OUT, 1 for the next...: seeds the sampler, so that workers
    differ and a single worker's study repeats."""
    with locked(out, ".workers.lock"):
        path = out / ".workers"
        try:
            n = int(path.read_text()[:20] or 0) if path.exists() else 0
        except (ValueError, OSError):
            n = 0
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


class TrialImpossible(Exception):
    """A drawn trial's values cannot train (an invalid combination of keys, a loss that
    diverges): it is FAIL with one line, and the study goes on."""


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


def trial_counts(study) -> tuple[int, int]:
    """(finished, running) trials of the study, from one read: counted in two reads, a trial
    that ends between them is in neither count, and one trial too many is drawn."""
    from optuna.trial import TrialState

    states = [t.state for t in study.get_trials(deepcopy=False)]
    done = sum(state in (TrialState.COMPLETE, TrialState.PRUNED) for state in states)
    return done, states.count(TrialState.RUNNING)


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
            result["reason"] = (f"trial {trial.number}: same parameters as trial "
                                f"{twin.number}; drawn again")
            raise DuplicateParameters(result["reason"])
        raw = json.loads(json.dumps(cfg_raw))
        for key, value in params.items():
            set_key(raw, key, value)
        try:
            cfg = from_dict(raw)
        except ConfigError as exc:
            result["reason"] = (f"trial {trial.number}: its values make an invalid config "
                                f"({exc}); marked FAIL")
            raise TrialImpossible(result["reason"]) from None
        trial.set_user_attr("config", to_dict(cfg))
        start = time.perf_counter()
        try:
            summary = run(cfg, out / "trials" / str(trial.number), data_dir,
                          config_name=f"{config_name}-trial",
                          reporter=TrialReporter(trial, optuna, log, warned), score_test=False)
        except Diverged as exc:
            result["reason"] = f"trial {trial.number}: {exc}; marked FAIL"
            raise TrialImpossible(result["reason"]) from None
        finally:
            result["seconds"] = time.perf_counter() - start
            trial.set_user_attr("seconds", result["seconds"])
        return summary["best_val_accuracy"]

    try:
        study.optimize(objective, n_trials=1, catch=(DuplicateParameters, TrialImpossible),
                       gc_after_trial=False, show_progress_bar=False)
    except (ValueError, RuntimeError) as exc:
        if "number" not in result or "Cannot tell" not in str(exc):
            raise
        # another worker failed this trial while it ran (its heartbeat had stopped: the
        # process was paused, or beat on another schedule): its result is dropped
        log(f"trial {result['number']}: marked FAIL by another worker while it ran (no "
            f"heartbeat for the grace period); its result is dropped")
        result["dropped"] = True
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
    size = space_size(space)
    if size < trials:
        raise UserError(f"{space_path}: the space has only {int(size)} distinct point(s), fewer "
                        f"than the {trials} trials asked for; ask for at most {int(size)}")
    for option, value in (("--out", out), ("--storage", storage_url), ("--study", study_name)):
        if value is not None and not str(value).strip():
            raise UserError(f"{option}: empty; give a value or leave the option out")
    study_name = study_name or config_name
    if len(study_name) > MAX_STUDY_NAME or not study_name.isprintable():
        raise UserError(f"--study: a name of at most {MAX_STUDY_NAME} printable characters, "
                        f"not {show_value(study_name[:60])}...")
    from mnist_bp.data.datadir import load_dataset, split_validation

    # the data and the split, before anything is made: a bad --data-dir or a validation
    # larger than the training set is one line, and OUT stays as it was
    split_validation(load_dataset(base.data.dataset, data_dir).train, base.data.validation)
    optuna = require_optuna(verbose)
    out = Path(out) if out is not None \
        else Path("tune") / f"{time.strftime('%Y%m%d-%H%M%S')}-{config_name}"
    with warnings.catch_warnings():
        if not verbose:  # Optuna's ExperimentalWarning, SQLAlchemy's, any UserWarning
            warnings.simplefilter("ignore")
        return _tune(optuna, cfg_raw, config_name, space, space_path, trials, timeout,
                     study_name, storage_url, out, base.seed, data_dir, log,
                     table)


def _tune(optuna, cfg_raw, config_name, space, space_path, trials, timeout, study_name,
          storage, out: Path, seed, data_dir, log, table) -> Path:
    from optuna.trial import TrialState

    url, study_file = storage_url(out, storage)
    where = str(study_file) if study_file else shown_url(url)
    storage = None if study_file else make_storage(optuna, url)  # a bad URL: OUT not made
    out.mkdir(parents=True, exist_ok=True)
    with locked(out, ".open.lock"):  # two workers starting at once create the file once
        claim_out(out, study_name, where)
        if study_file is not None:
            check_study_file(study_file)
            storage = make_storage(optuna, url)
        sampler_seed = int(np.random.SeedSequence([seed, worker_number(out)])
                           .generate_state(1)[0])
        study = open_study(optuna, storage, study_name, space, sampler_seed, where)
    warned: set[str] = set()
    log(f"study {study.study_name} in {where}; trials in {out / 'trials'}")
    started = time.monotonic()
    repeats = 0  # draws in a row that repeated earlier parameters
    while True:
        if timeout is not None and time.monotonic() - started > timeout:
            log(f"timeout: {timeout:g} s passed; no new trials")
            break
        with AskLock(out) as lock:
            fail_dead_trials(optuna, study, log)
            done, running = trial_counts(study)
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
        if result.get("dropped"):
            continue
        if trial is not None and trial.state == TrialState.FAIL:
            log(result.get("reason", f"trial {trial.number}: marked FAIL"))
            repeats = repeats + 1 if "same parameters" in result.get("reason", "") else 0
            if repeats >= MAX_REPEATS:
                raise UserError(f"{space_path}: {MAX_REPEATS} draws in a row repeated earlier "
                                f"parameters: the search space has no new ones left; widen it "
                                f"or ask for fewer trials")
            continue
        repeats = 0
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
    folder = Owned(out, "move it away, or give another --out")
    with folder.writing("trials.csv", "w") as f:
        f.write(buf.getvalue())
    complete = [t for t in all_trials if t.state == TrialState.COMPLETE and t.value is not None
                and isinstance(t.user_attrs.get("config"), dict)]
    if complete:
        best = max(complete, key=lambda t: (t.value, -t.number))
        cfg = from_dict(best.user_attrs["config"])
        with folder.writing("best.yaml", "w") as f:
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
    with Owned(out, "move it away, or give another --out").writing("study.png") as f:
        f.write(data)
