import pytest
import yaml
from click.testing import CliRunner

from mnist_bp.cli import main
from mnist_bp.config import (
    Config,
    ConfigError,
    apply_override,
    dump_yaml,
    from_dict,
    load_config,
    packaged_config_dir,
)


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ("model:\n  activaton: relu\n", "model.activaton: unknown key; did you mean 'activation'?"),
    ("optimiser:\n  name: sgd\n", "optimiser: unknown key; did you mean 'optimizer'?"),
    ("model:\n  activation: relux\n", "model.activation: 'relux' is not allowed; choose one of "
                                       "relu, leaky_relu, tanh, sigmoid, gelu; "
                                       "did you mean 'relu'?"),
    ("training:\n  epochs: ten\n",
     "training.epochs: 'ten' is not allowed; expected a whole number"),
    ("training:\n  epochs: 2.5\n", "training.epochs: 2.5 is not allowed; expected a whole number"),
    ("training:\n  batch_size: 0\n", "training.batch_size: 0 is out of range; allowed: >= 1"),
    ("model:\n  dropout: 1.0\n", "model.dropout: 1.0 is out of range; allowed: >= 0.0 and < 1.0"),
    ("model:\n  hidden: 512\n",
     "model.hidden: 512 is not allowed; expected a list of whole numbers"),
    ("model:\n  hidden: [512, -1]\n", "model.hidden[1]: -1 is out of range; allowed: >= 1"),
    ("optimizer:\n  learning_rate: true\n", "optimizer.learning_rate: True is not allowed; "
                                            "expected a number"),
    ("data:\n  dataset: cifar\n", "data.dataset: 'cifar' is not allowed; choose one of mnist, "
                                  "fashion-mnist, kmnist"),
    ("model: [1, 2]\n", "model: expected a mapping of keys"),
    ("model:\n  output_activation: sigmoid\n", "model.output_activation: cross_entropy applies "
                                               "its own softmax"),
    ("training:\n  early_stopping_patience: 3\n", "training.early_stopping_patience: needs a "
                                                   "validation split"),
    ("seed: 1\nmodel: {hidden: [1\n", "not valid YAML at line 3; fix the file's syntax"),
    ("data:\n  dataset: fashion-mnist\n  printed: true\n", "data.printed: the printed digits "
     "are digits and fashion-mnist holds other classes; set data.printed to false"),
    ("data:\n  printed: 1\n", "data.printed: 1 is not allowed"),
])
def test_bad_configs(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


@pytest.mark.parametrize("text, message", [
    ("model:\n  activaton: relu\n", "model.activaton: unknown key; did you mean 'activation'?"),
    ("training:\n  epochs: -3\n", "training.epochs: -3 is out of range"),
])
def test_bad_config_cli_one_line_nonzero(tmp_path, text, message):
    path = write(tmp_path, text)
    result = CliRunner().invoke(main, ["train", str(path), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {path}: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_overrides_parse_values():
    raw = {}
    apply_override(raw, "optimizer.learning_rate=0.01")
    apply_override(raw, "model.hidden=[64, 32]")
    apply_override(raw, "augment.shift.p=1")
    apply_override(raw, "data.dataset=fashion-mnist")
    cfg = from_dict(raw)
    assert cfg.optimizer.learning_rate == 0.01 and cfg.model.hidden == (64, 32)
    assert cfg.augment.shift.p == 1.0 and cfg.data.dataset == "fashion-mnist"


@pytest.mark.parametrize("assignment, message", [
    ("optimizer.learning_rat=0.1", "unknown key 'optimizer.learning_rat'; did you mean "
                                   "'learning_rate'?"),
    ("optimizer=adam", "'optimizer' is a section; set one of its keys"),
    ("seed.x=1", "'seed' is not a section"),
    ("novalue", "expected KEY=VALUE"),
])
def test_bad_overrides(assignment, message):
    with pytest.raises(ConfigError, match=message):
        apply_override({}, assignment)


def test_shipped_configs_valid_and_round_trip(tmp_path):
    names = sorted(p.stem for p in packaged_config_dir().glob("*.yaml"))
    assert {"default", "classic", "bench"} <= set(names)
    for name in names:
        cfg, source = load_config(name)
        assert source.name == f"{name}.yaml"
        # the resolved config written to a run is a valid CONFIG that resolves the same
        again = write(tmp_path, dump_yaml(cfg))
        assert load_config(again)[0] == cfg


def test_defaults_and_bench_contract():
    assert from_dict({}) == Config()
    bench, _ = load_config("bench")
    assert bench.data.dataset == "fashion-mnist" and bench.data.validation == 0
    assert bench.model.hidden == (512, 512) and bench.model.activation == "relu"
    assert bench.model.dropout == 0 and bench.loss.name == "cross_entropy"
    assert (bench.optimizer.name, bench.optimizer.learning_rate, bench.optimizer.momentum) == (
        "momentum", 0.05, 0.9)
    assert bench.training.batch_size == 128
    classic, _ = load_config("classic")
    assert classic.model.hidden == (30,) and classic.loss.name == "mse"
    assert classic.model.activation == "sigmoid" and classic.optimizer.name == "sgd"


def test_resolved_yaml_has_every_section():
    doc = yaml.safe_load(dump_yaml(Config()))
    assert list(doc) == ["seed", "data", "model", "loss", "optimizer", "schedule", "training",
                         "augment"]
