"""`mnist-bp tune`: hyperparameter search with Optuna, on one machine or many.

    mnist-bp tune default --space space.yaml --trials 20 --set data.validation=1000
    mnist-bp tune default --space space.yaml --trials 20 --out tune/x   # again: continues
    mnist-bp tune default --space space.yaml --storage postgresql://host/db   # many machines

SPACE.yaml maps dotted config keys to `{low, high}` (float or int by the key's type; optional
`log: true`, `step`) or `{choices: [...]}`. Each trial is an ordinary training run in
OUT/trials/<number>/, scored by its best validation accuracy, pruned when it falls behind
(Optuna's median pruner, fed every epoch's validation accuracy, from the second epoch on).
The study lives in OUT/study.journal (Optuna's journal file: several processes may write it
at once), or in `--storage` (a journal file on a shared filesystem, or a database URL).
Optuna is the `tune` extra, imported only here.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import socket
import threading
import time
import typing
import warnings
from dataclasses import fields, is_dataclass
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
)
from mnist_bp.errors import UserError
from mnist_bp.fsutil import atomic_write, locked
from mnist_bp.training import NullReporter, run

INSTALL_HINT = "install the tune extra: pip install 'mnist-bp[tune]' (optuna)"
SPEC_KEYS = {"low", "high", "log", "step", "choices"}
JOURNAL = "study.journal"
HOST = socket.gethostname()


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
                raw_cfg = json.loads(json.dumps(base))
                set_key(raw_cfg, key, value)
                from_dict(raw_cfg)
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


# --- storage and workers ---------------------------------------------------------------------

def require_optuna():
    try:
        import optuna
    except ImportError:
        raise UserError(f"tune needs optuna; {INSTALL_HINT}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Heartbeats are recorded here around ask and tell (see `heartbeat`), which Optuna warns
    # about as if they were not; and they are still marked experimental. Neither is news.
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def heartbeat_settings() -> tuple[int, int]:
    """(heartbeat_interval, grace_period) in seconds for database storages: 10 and 60, or
    `$MNIST_BP_TUNE_HEARTBEAT` as "INTERVAL,GRACE" (shorter for tests)."""
    text = os.environ.get("MNIST_BP_TUNE_HEARTBEAT", "")
    try:
        interval, grace = (int(x) for x in text.split(","))
        if 0 < interval < grace:
            return interval, grace
    except ValueError:
        pass
    return 10, 60


def make_storage(optuna, out: Path, url: str | None, log=print):
    """Optuna's journal file in OUT by default (several processes may append to it at
    once; SQLite locks up under concurrent writers), a journal file path, or a database URL
    (with Optuna's RDB heartbeats, so that any worker finds a dead worker's trials)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

    if url is None or "://" not in url:
        path = Path(url) if url else out / JOURNAL
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = JournalFileSymlinkLock(str(path))
        repair_journal(path, lock, log)
        return JournalStorage(JournalFileBackend(str(path), lock_obj=lock))
    interval, grace = heartbeat_settings()
    try:
        return optuna.storages.RDBStorage(url, heartbeat_interval=interval, grace_period=grace)
    except Exception as exc:  # noqa: BLE001 - any driver or connection error, one line
        raise UserError(f"--storage {shown_url(url)}: cannot open it ({type(exc).__name__}: "
                        f"{shown_url(str(exc).splitlines()[0][:200])}); check the URL and that "
                        "its database driver is installed (pip install 'mnist-bp[tune]')") \
            from None


def repair_journal(path: Path, lock, log) -> None:
    """Set aside what a crash or a full disk left torn in the journal, under Optuna's own
    lock: a last line cut short (Optuna would write the next record onto it, and then no
    worker could read the study again) and lines that are not JSON. A torn fragment glued to
    a whole record keeps the record. What is removed goes to `JOURNAL.torn-<time>`."""
    if not path.is_file():
        return
    lock.acquire()
    try:
        data = path.read_bytes()
        *lines, tail = data.split(b"\n")
        kept, torn = [], [tail] if tail else []
        for line in lines:
            if _json_line(line):
                kept.append(line)
                continue
            start = line.rfind(b'{"op_code"')
            if start > 0 and _json_line(line[start:]):
                kept.append(line[start:])
                torn.append(line[:start])
            elif line.strip():
                torn.append(line)
        if not torn:
            return
        backup = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}")
        backup.write_bytes(b"\n".join(torn) + b"\n")
        with atomic_write(path) as f:
            f.write(b"".join(line + b"\n" for line in kept))
    finally:
        lock.release()
    log(f"{path}: set aside {len(torn)} torn line(s) (a crash or a full disk?) in "
        f"{backup.name}; the study goes on")


def _json_line(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


@contextlib.contextmanager
def heartbeat(study, trial):
    """Record Optuna's heartbeat for `trial` every heartbeat_interval while the block runs,
    where the storage keeps heartbeats (databases). `study.optimize` does this itself; the
    ask-and-tell loop here must, or no other worker could tell this one's death."""
    storage = study._storage
    interval = (storage.get_heartbeat_interval() if hasattr(storage, "record_heartbeat")
                else None)
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat():
        while not stop.wait(interval):
            with contextlib.suppress(Exception):  # a lost connection: try again next beat
                storage.record_heartbeat(trial._trial_id)

    thread = threading.Thread(target=beat, name="mnist-bp-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def shown_url(url: str) -> str:
    """A storage URL as messages show it: the password hidden."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def process_start(pid: int) -> str | None:
    """The start time of process `pid` (tells a live process from a reused pid), or None if
    there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "?"


def fail_dead_trials(optuna, study, log) -> int:
    """Mark FAIL the RUNNING trials whose worker on this host is gone (and, where the
    storage keeps heartbeats, those of silent workers anywhere)."""
    from optuna.trial import TrialState

    failed = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = t.user_attrs
        if attrs.get("host") != HOST or "pid" not in attrs:
            continue
        if process_start(attrs["pid"]) == attrs.get("pid_start"):
            continue
        with contextlib.suppress(Exception):  # another worker may have done it first
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            failed += 1
            log(f"trial {t.number}: its worker (pid {attrs['pid']}) is gone; marked FAIL")
    # Optuna's own liveness, where the storage keeps heartbeats (databases): RUNNING trials
    # whose heartbeat is older than the grace period become FAIL, whoever ran them.
    optuna.storages.fail_stale_trials(study)
    return failed


def worker_number(out: Path) -> int:
    """0 for the first worker on OUT, 1 for the next...: seeds the sampler, so that workers
    differ and a single worker's study repeats."""
    with locked(out, ".workers.lock"):
        path = out / ".workers"
        n = int(path.read_text() or 0) if path.exists() else 0
        path.write_text(str(n + 1))
    return n


# --- the study -------------------------------------------------------------------------------

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


def same_params(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        (np.isclose(a[k], b[k], rtol=1e-12, atol=0) if isinstance(a[k], float)
         and isinstance(b[k], float) else a[k] == b[k]) for k in a)


def duplicate_of(study, trial, params: dict):
    """An earlier-numbered live or finished trial with the same parameters, if any."""
    from optuna.trial import TrialState

    for other in study.get_trials(deepcopy=False):
        if other.number >= trial.number or other.state == TrialState.FAIL:
            continue
        if same_params(other.params, params):
            return other
    return None


def tune(cfg_raw: dict, config_name: str, space_path: Path, *, trials: int,
         timeout: float | None, study_name: str | None, storage_url: str | None,
         out: Path | None, data_dir, log=print, table=print) -> Path:
    """Run trials until the study holds `trials` finished ones (or `timeout` passes)."""
    base = from_dict(cfg_raw)
    if base.data.validation <= 0:
        raise UserError(f"{config_name}: data.validation is 0, but tune scores trials on a "
                        "validation split; add --set data.validation=1000 (images held out of "
                        "the training files)")
    space = load_space(space_path, cfg_raw)
    optuna = require_optuna()
    out = Path(out) if out else Path("tune") / f"{time.strftime('%Y%m%d-%H%M%S')}-{config_name}"
    out.mkdir(parents=True, exist_ok=True)
    storage = make_storage(optuna, out, storage_url, log)
    seed = int(np.random.SeedSequence([base.seed, worker_number(out)]).generate_state(1)[0])
    study = optuna.create_study(
        study_name=study_name or config_name, storage=storage, direction="maximize",
        load_if_exists=True, sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2))
    study.set_user_attr("space", {k: {kk: vv for kk, vv in v.items() if kk != "kind"}
                                  for k, v in space.items()})
    warned: set[str] = set()
    log(f"study {study.study_name} in {shown_url(storage_url) if storage_url else out / JOURNAL}; "
        f"trials in {out / 'trials'}")
    started = time.monotonic()
    from optuna.trial import TrialState

    finished_states = (TrialState.COMPLETE, TrialState.PRUNED)
    while True:
        if timeout is not None and time.monotonic() - started > timeout:
            log(f"timeout: {timeout:g} s passed; no new trials")
            break
        # Count and start under one lock, so that workers on this OUT never start more
        # trials than asked for together (workers on other machines count through storage).
        with locked(out, ".ask.lock"):
            fail_dead_trials(optuna, study, log)
            done = study.get_trials(deepcopy=False, states=finished_states)
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            trial = None
            if len(done) + len(running) < trials:
                trial = study.ask()
                if isinstance(storage, optuna.storages.RDBStorage):
                    storage.record_heartbeat(trial._trial_id)  # alive from the first moment
                trial.set_user_attr("host", HOST)
                trial.set_user_attr("pid", os.getpid())
                trial.set_user_attr("pid_start", process_start(os.getpid()))
        if trial is None:
            if running:  # other workers are finishing the last ones (or are found dead
                time.sleep(1.0)  # by fail_dead_trials above, through their heartbeats)
                continue
            break
        params = suggest(trial, space)
        twin = duplicate_of(study, trial, params)
        if twin is not None:  # another worker (or TPE) proposed these already
            study.tell(trial, state=TrialState.FAIL)
            log(f"trial {trial.number}: same parameters as trial {twin.number}; drawn again")
            if len(study.get_trials(deepcopy=False)) > 20 * trials:
                raise UserError(f"{space_path}: the search space has no new parameters left; "
                                "widen it or ask for fewer trials")
            continue
        raw = json.loads(json.dumps(cfg_raw))
        for key, value in params.items():
            set_key(raw, key, value)
        cfg = from_dict(raw)
        trial.set_user_attr("config", to_dict(cfg))
        run_dir = out / "trials" / str(trial.number)
        start = time.perf_counter()
        try:
            with heartbeat(study, trial):
                summary = run(cfg, run_dir, data_dir, config_name=f"{config_name}-trial",
                              reporter=TrialReporter(trial, optuna, log, warned),
                              score_test=False)
        except optuna.TrialPruned:
            state, value = TrialState.PRUNED, None
        except Exception:  # Interrupted included: the trial is FAIL, the study stays usable
            study.tell(trial, state=TrialState.FAIL)
            write_outputs(study, space, out)
            raise
        else:
            state, value = TrialState.COMPLETE, summary["best_val_accuracy"]
        seconds = time.perf_counter() - start
        trial.set_user_attr("seconds", seconds)
        if state == TrialState.PRUNED:
            study.tell(trial, state=state)
        else:
            study.tell(trial, value)
        write_outputs(study, space, out)
        table(trial_line(trial.number, state.name, value, seconds, params))
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
