"""YAML configs become frozen dataclasses here, at one boundary.

Unknown keys, wrong types and out-of-range values are rejected with the dotted key, the bad
value and what is allowed; `--set dotted.key=value` overrides any key before validation.

    cfg = load_config("configs/default.yaml", overrides=["optimizer.learning_rate=0.01"])
"""

from __future__ import annotations

import difflib
import functools
import math
import reprlib
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from importlib import resources
from pathlib import Path

from mnist_bp import limits
from mnist_bp.data.printed import DATASETS as PRINTED_DATASETS
from mnist_bp.data.registry import DATASETS, IMAGE_PIXELS, NUM_CLASSES
from mnist_bp.errors import UserError

DATASET_NAMES = tuple(DATASETS)
# Limits that keep a config from a stranger in bounded time and memory, checked before
# anything is built from it (limits.py says why each value).
MAX_FILE_BYTES = limits.CONFIG_BYTES
MAX_DEPTH = limits.YAML_DEPTH
MAX_PARAMETERS = limits.MAX_PARAMETERS
MAX_LAYERS = limits.MAX_LAYERS
LARGE = limits.LARGE_COUNT


class ConfigError(UserError):
    pass


def opt(default, *, choices=None, ge=None, gt=None, le=None, lt=None, doc=""):
    """A config field with its allowed values (used by validation and error messages)."""
    meta = {"choices": choices, "ge": ge, "gt": gt, "le": le, "lt": lt, "doc": doc}
    if isinstance(default, (list, dict)) or is_dataclass(default):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DataConfig:
    dataset: str = opt("mnist", choices=DATASET_NAMES)
    validation: int = opt(0, ge=0, le=10_000_000,
                          doc="images held out of the training files; 0 = none")
    normalize: str = opt("scale", choices=("scale", "center", "standardize", "image"),
                         doc="scale: pixel/255; center: 2 pixel/255 - 1 (inverting the colours "
                             "negates the input); standardize: (pixel/255 - mean) / std; "
                             "image: each image to mean 0, std 1 (any colours -> +/- one input)")
    printed: bool = opt(False, doc="also train on the printed digits shipped with mnist-bp "
                                   "(digits of about 300 fonts as predict prepares them); "
                                   "digit datasets only")


@dataclass(frozen=True)
class ModelConfig:
    hidden: tuple[int, ...] = opt((256,), ge=1, le=65536, doc="hidden layer sizes")
    activation: str = opt("relu", choices=("relu", "leaky_relu", "tanh", "sigmoid", "gelu"))
    leaky_slope: float = opt(0.01, ge=0.0, lt=1.0)
    dropout: float = opt(0.0, ge=0.0, lt=1.0, doc="drop probability after each hidden layer")
    input_dropout: float = opt(0.0, ge=0.0, lt=1.0, doc="drop probability on input pixels")
    init: str = opt("he", choices=("he", "xavier", "normal"))
    init_scale: float = opt(1.0, gt=0.0, doc="multiplies the init std (the std itself for normal)")
    output_activation: str = opt("none", choices=("none", "sigmoid"),
                                 doc="sigmoid for the classic MSE network; "
                                     "cross_entropy needs none")


@dataclass(frozen=True)
class LossConfig:
    name: str = opt("cross_entropy", choices=("cross_entropy", "mse"))
    label_smoothing: float = opt(0.0, ge=0.0, lt=1.0)


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = opt("adam", choices=("sgd", "momentum", "nesterov", "adam", "adamw"))
    learning_rate: float = opt(0.001, gt=0.0)
    momentum: float = opt(0.9, ge=0.0, lt=1.0)
    beta1: float = opt(0.9, ge=0.0, lt=1.0)
    beta2: float = opt(0.999, ge=0.0, lt=1.0)
    eps: float = opt(1e-8, gt=0.0)
    weight_decay: float = opt(0.0, ge=0.0, doc="L2 on weights (decoupled for adamw); not biases")
    max_norm: float = opt(0.0, ge=0.0, doc="max-norm constraint on each unit's incoming weights")


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = opt("constant", choices=("constant", "step", "cosine", "onecycle"))
    warmup_epochs: float = opt(0.0, ge=0.0, le=LARGE,
                               doc="linear warmup from 0 (constant, step, cosine)")
    step_epochs: int = opt(10, ge=1, le=LARGE, doc="step: decay every this many epochs")
    gamma: float = opt(0.1, gt=0.0, le=1.0, doc="step: decay factor")
    min_lr: float = opt(0.0, ge=0.0, doc="cosine: final learning rate")
    pct_start: float = opt(0.3, gt=0.0, lt=1.0, doc="onecycle: fraction of steps rising")
    div_factor: float = opt(25.0, gt=0.0, doc="onecycle: start at learning_rate / div_factor")
    final_div_factor: float = opt(1e4, gt=0.0, doc="onecycle: end at start / final_div_factor")


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = opt(10, ge=1, le=LARGE)
    batch_size: int = opt(128, ge=1, le=65536)
    early_stopping_patience: int = opt(0, ge=0, le=LARGE, doc="epochs without improvement; 0 = off")
    early_stopping_metric: str = opt("val_acc", choices=("val_acc", "val_loss"))
    clip_grad_norm: float = opt(0.0, ge=0.0, doc="clip the global gradient norm; 0 = off")
    eval_batch_size: int = opt(2000, ge=1, le=65536)
    checkpoint_every: int = opt(1, ge=1, le=LARGE,
                                doc="write last.npz (and the metrics) every this many epochs "
                                    "and after the last; an epoch with a better validation "
                                    "metric always writes best.npz")
    prefetch: bool = opt(False, doc="prepare each augmented batch in a worker thread while the "
                                    "step before it runs (for machines with cores to spare)")
    tensorboard: bool = opt(False, doc="write TensorBoard event files under RUN/tensorboard/ "
                                       "(train --tensorboard does the same)")
    precision: str = opt("float32", choices=("float32", "bfloat16"),
                         doc="bfloat16: the products' inputs rounded to bfloat16 while training "
                             "(float32 accumulation, weights and optimizer state); needs the "
                             "fast extra and a CPU with AVX512_BF16 or AMX, else float32")


@dataclass(frozen=True)
class ShiftConfig:
    p: float = opt(0.0, ge=0.0, le=1.0)
    pixels: int = opt(2, ge=0, le=14)


@dataclass(frozen=True)
class FlipConfig:
    p: float = opt(0.0, ge=0.0, le=1.0, doc="mirror left-right (clothes, not digits)")


@dataclass(frozen=True)
class EraseConfig:
    p: float = opt(0.0, ge=0.0, le=1.0)
    min_area: float = opt(0.02, gt=0.0, le=1.0, doc="smallest erased fraction of the image")
    max_area: float = opt(0.25, gt=0.0, le=1.0, doc="largest erased fraction of the image")
    max_aspect: float = opt(3.0, ge=1.0, doc="rectangle height/width within [1/a, a]")


@dataclass(frozen=True)
class AffineConfig:
    p: float = opt(0.0, ge=0.0, le=1.0)
    degrees: float = opt(10.0, ge=0.0, le=180.0)
    scale: float = opt(0.1, ge=0.0, lt=1.0, doc="zoom drawn from [1 - scale, 1 + scale]")
    shear: float = opt(0.1, ge=0.0, le=1.0, doc="shear factor drawn from [-shear, shear]")


@dataclass(frozen=True)
class ElasticConfig:
    p: float = opt(0.0, ge=0.0, le=1.0)
    alpha: float = opt(34.0, ge=0.0, le=1000.0)
    sigma: float = opt(4.0, gt=0.0, le=28.0)


@dataclass(frozen=True)
class InvertConfig:
    p: float = opt(0.0, ge=0.0, le=1.0)


@dataclass(frozen=True)
class ColorsConfig:
    p: float = opt(0.0, ge=0.0, le=1.0)
    min_contrast: float = opt(0.4, gt=0.0, le=1.0, doc="smallest |fg - bg| (pixels in 0..1)")


@dataclass(frozen=True)
class NoiseConfig:
    p: float = opt(0.0, ge=0.0, le=1.0)
    std: float = opt(0.1, ge=0.0)


@dataclass(frozen=True)
class AugmentConfig:
    shift: ShiftConfig = opt(ShiftConfig())
    flip: FlipConfig = opt(FlipConfig())
    affine: AffineConfig = opt(AffineConfig())
    elastic: ElasticConfig = opt(ElasticConfig())
    invert: InvertConfig = opt(InvertConfig())
    colors: ColorsConfig = opt(ColorsConfig())
    noise: NoiseConfig = opt(NoiseConfig())
    erase: EraseConfig = opt(EraseConfig())


@dataclass(frozen=True)
class Config:
    seed: int = opt(0, ge=0, le=2**63 - 1)
    data: DataConfig = opt(DataConfig())
    model: ModelConfig = opt(ModelConfig())
    loss: LossConfig = opt(LossConfig())
    optimizer: OptimizerConfig = opt(OptimizerConfig())
    schedule: ScheduleConfig = opt(ScheduleConfig())
    training: TrainingConfig = opt(TrainingConfig())
    augment: AugmentConfig = opt(AugmentConfig())


# --- validation ---------------------------------------------------------------------------

def show_value(value) -> str:
    """A value as an error message shows it: its repr, cut short."""
    try:
        return _REPR.repr(value)
    except ValueError:  # an int of more digits than Python prints
        return f"<a {type(value).__name__} too long to show>"


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlong = 40


def _near(word: str, options) -> str:
    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""


def _coerce(value, hint, meta, key):
    """Check `value` against the annotation `hint` and the field's limits."""
    def bad(allowed):
        raise ConfigError(f"{key}: {show_value(value)} is not allowed; expected {allowed}")

    origin = typing.get_origin(hint)
    if is_dataclass(hint):
        return _build(hint, value, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            bad("a list of whole numbers, e.g. [512, 256]")
        return tuple(_coerce(v, int, meta, f"{key}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            bad("true or false")
    elif hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            bad("a whole number")
    elif hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                bad("a number")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            bad("a number")
        try:
            value = float(value)
        except OverflowError:
            bad("a number of reasonable size")
        if not math.isfinite(value):
            bad("a finite number")
    elif hint is str:
        if not isinstance(value, str):
            bad("a string")
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{key}: {show_value(value)} is not allowed; choose one of "
                          f"{', '.join(choices)}{_near(str(value), choices)}")
    limits = [("ge", lambda a, b: a >= b, ">="), ("gt", lambda a, b: a > b, ">"),
              ("le", lambda a, b: a <= b, "<="), ("lt", lambda a, b: a < b, "<")]
    for name, ok, _ in limits:
        bound = meta.get(name)
        if bound is not None and not ok(value, bound):
            bounds = " and ".join(f"{s} {meta[n]}" for n, _, s in limits if meta.get(n) is not None)
            raise ConfigError(f"{key}: {show_value(value)} is out of range; allowed: {bounds}")
    return value


def _build(cls, raw, prefix: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping of keys, got "
                          f"{show_value(raw)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    for key in raw:
        if key not in names:
            dotted = f"{prefix}.{str(key)[:60]}" if prefix else str(key)[:60]
            raise ConfigError(f"{dotted}: unknown key{_near(str(key)[:60], names)} "
                              f"(allowed: {', '.join(names)})")
    kwargs = {}
    for f in fields(cls):
        if f.name in raw:
            dotted = f"{prefix}.{f.name}" if prefix else f.name
            kwargs[f.name] = _coerce(raw[f.name], hints[f.name], f.metadata, dotted)
    return cls(**kwargs)


def _check_combinations(cfg: Config) -> None:
    sizes = [IMAGE_PIXELS, *cfg.model.hidden, NUM_CLASSES]
    if len(cfg.model.hidden) > MAX_LAYERS:
        raise ConfigError(f"model.hidden: {len(cfg.model.hidden)} layers is more than the "
                          f"{MAX_LAYERS} allowed")
    weights = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    if weights > MAX_PARAMETERS:
        raise ConfigError(f"model.hidden: {list(cfg.model.hidden)} makes {weights:,} "
                          f"parameters, more than the {MAX_PARAMETERS:,} allowed; use "
                          f"smaller layers")
    if cfg.loss.name == "cross_entropy" and cfg.model.output_activation != "none":
        raise ConfigError("model.output_activation: cross_entropy applies its own softmax; "
                          "set it to none (or use loss.name: mse)")
    if cfg.training.early_stopping_patience and cfg.data.validation == 0:
        raise ConfigError("training.early_stopping_patience: needs a validation split; set "
                          "data.validation above 0 or the patience to 0")
    if cfg.data.printed and cfg.data.dataset not in PRINTED_DATASETS:
        raise ConfigError(f"data.printed: the printed digits are digits and "
                          f"{cfg.data.dataset} holds other classes; set data.printed to false")
    erase = cfg.augment.erase
    if erase.min_area > erase.max_area:
        raise ConfigError(f"augment.erase.min_area: {erase.min_area} is above max_area "
                          f"{erase.max_area}; make min_area <= max_area")


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def with_value(cfg: Config, key: str, value) -> Config:
    """`cfg` with the dotted `key` set to `value`, checked as a config file's value would be
    (type, range, and the checks across keys); ConfigError names the key. One value costs
    microseconds: a search space's long list of choices is checked value by value here,
    without building a whole config from a dict for each."""
    def put(obj, parts: list[str], prefix: str):
        name = parts[0]
        names = [f.name for f in fields(obj)]
        if name not in names:
            raise ConfigError(f"{prefix}{name}: unknown key{_near(name, names)}")
        meta = next(f.metadata for f in fields(obj) if f.name == name)
        hint = _hints(type(obj))[name]
        if len(parts) == 1:
            new = _coerce(value, hint, meta, prefix + name)
        elif is_dataclass(hint):
            new = put(getattr(obj, name), parts[1:], f"{prefix}{name}.")
        else:
            raise ConfigError(f"{prefix}{name}: is not a section")
        return replace(obj, **{name: new})

    changed = put(cfg, key.split("."), "")
    _check_combinations(changed)
    return changed


def from_dict(raw: dict) -> Config:
    cfg = _build(Config, raw, "")
    _check_combinations(cfg)
    return cfg


def to_dict(cfg) -> dict:
    """Plain nested dicts and lists (YAML- and JSON-ready)."""
    def plain(v):
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v
    return plain(asdict(cfg))


# --- files and overrides -------------------------------------------------------------------

def packaged_config_dir() -> Path:
    """Shipped configs: package data in a wheel, the top-level configs/ in a checkout."""
    packaged = Path(str(resources.files("mnist_bp"))) / "configs"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "configs"


class _Refused(Exception):
    """YAML the loader will not build (aliases, deep nesting, giant numbers)."""


def _nesting_refused(events):
    """libyaml's events, its own nesting limit said as ours."""
    import yaml

    try:
        yield from events
    except yaml.YAMLError as exc:
        if "maximum nesting depth" in str(getattr(exc, "problem", "")):
            raise _Refused(f"nested more than {MAX_DEPTH} levels deep") from None
        raise


def parse_yaml(text: str):
    """YAML text -> Python values, safely and in bounded time and memory: only plain
    types (yaml's safe loader), no aliases (`*name`: an alias bomb expands a few lines into
    billions of nodes), at most MAX_DEPTH levels of nesting, numbers Python can read.
    Raises _Refused or yaml.YAMLError."""
    import yaml

    class Loader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                raise _Refused("YAML aliases (*name) are not allowed; write the value out")
            self.depth += 1
            try:
                if self.depth > MAX_DEPTH:
                    raise _Refused(f"nested more than {MAX_DEPTH} levels deep")
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    try:
        if getattr(yaml, "__with_libyaml__", False):
            # libyaml's C parser: a megabyte of choices in a second, not twenty. Its events
            # are checked first (aliases, depth), before anything is composed from them.
            depth = 0
            events = yaml.parse(text, Loader=yaml.CSafeLoader)
            for event in _nesting_refused(events):
                if isinstance(event, yaml.AliasEvent):
                    raise _Refused("YAML aliases (*name) are not allowed; write the value out")
                if isinstance(event, yaml.CollectionStartEvent):
                    depth += 1
                    if depth > MAX_DEPTH:
                        raise _Refused(f"nested more than {MAX_DEPTH} levels deep")
                elif isinstance(event, yaml.CollectionEndEvent):
                    depth -= 1
                elif isinstance(event, yaml.ScalarEvent) and depth + 1 > MAX_DEPTH:
                    raise _Refused(f"nested more than {MAX_DEPTH} levels deep")
            return yaml.load(text, Loader=yaml.CSafeLoader)  # noqa: S506 - the safe loader
        return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
    except (_Refused, yaml.YAMLError):
        raise
    except RecursionError:
        raise _Refused(f"nested more than {MAX_DEPTH} levels deep") from None
    except Exception as exc:  # a value a constructor cannot build (huge ints, odd tags...)
        raise _Refused(f"a value it cannot read ({type(exc).__name__})") from None


def read_yaml(path: Path, what: str = "a config is a mapping of sections (seed, data, "
              "model, ...)") -> dict:
    """A YAML file's mapping; `what` says what the file should hold when it is no mapping.
    Every problem is one ConfigError naming the file."""
    import yaml

    path = Path(path)
    if not path.exists() and not path.is_symlink():
        shipped = ", ".join(sorted(p.name for p in packaged_config_dir().glob("*.yaml")))
        raise ConfigError(f"{path}: config file not found (shipped configs: {shipped})")
    try:
        data = limits.read_bounded(path, MAX_FILE_BYTES, "config", "is it the right file?")
    except UserError as exc:
        raise ConfigError(str(exc)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") \
            from None
    try:
        raw = parse_yaml(text)
    except _Refused as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}; fix the file's syntax") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {what}")
    return raw


def resolve_config_path(name: str | Path | None) -> Path:
    """A path as given, or the name of a shipped config (`default`, `classic.yaml`...)."""
    if name is None:
        return packaged_config_dir() / "default.yaml"
    path = Path(name)
    if path.exists():
        return path
    shipped = packaged_config_dir()
    for candidate in (shipped / path.name, shipped / f"{path.name}.yaml"):
        if candidate.exists():
            return candidate
    return path


def apply_override(raw: dict, assignment: str) -> None:
    """Set `dotted.key=value` in the raw dict; the value is parsed as YAML (0.1, [512, 512])."""
    import yaml

    key, sep, text = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. --set "
                          f"optimizer.learning_rate=0.01")
    try:
        value = parse_yaml(text)
    except _Refused as exc:
        raise ConfigError(f"--set {key[:60]}: {exc}") from None
    except yaml.YAMLError:
        value = text
    set_key(raw, key, value)


def set_key(raw: dict, key: str, value) -> None:
    """Set the config key `dotted.key` to `value` in the raw dict, creating sections on the way;
    a key the config does not have is an error naming it (and the nearest names)."""
    parts = key.split(".")
    cls = Config
    node = raw
    for depth, part in enumerate(parts):
        names = [f.name for f in fields(cls)]
        dotted = ".".join(parts[: depth + 1])
        if part not in names:
            raise ConfigError(f"--set {key}: unknown key '{dotted}'{_near(part, names)} "
                              f"(allowed: {', '.join(names)})")
        hint = typing.get_type_hints(cls)[part]
        if depth == len(parts) - 1:
            if is_dataclass(hint):
                raise ConfigError(f"--set {key}: '{dotted}' is a section; set one of its keys, "
                                  f"e.g. {dotted}.{fields(hint)[0].name}=...")
            node[part] = value
            return
        if not is_dataclass(hint):
            raise ConfigError(f"--set {key}: '{dotted}' is not a section")
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node, cls = child, hint


def load_config(path: str | Path | None = None, overrides=()) -> tuple[Config, Path]:
    """Read, override and validate a config; returns it with the file it came from."""
    source = resolve_config_path(path)
    raw = read_yaml(source)
    for assignment in overrides:
        apply_override(raw, assignment)
    try:
        return from_dict(raw), source
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def dump_yaml(cfg: Config) -> str:
    import yaml

    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)
