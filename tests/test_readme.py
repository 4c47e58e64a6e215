"""The README stays true: every config key, command and shipped config is documented."""

import re
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path

from mnist_bp.cli import main
from mnist_bp.config import Config, packaged_config_dir

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def dotted_keys(cls, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if is_dataclass(hints[f.name]):
            yield from dotted_keys(hints[f.name], key)
        else:
            yield key, f


def test_every_config_key_in_the_table_with_its_default():
    for key, f in dotted_keys(Config):
        default = list(f.default) if isinstance(f.default, tuple) else f.default
        row = re.search(rf"^\| `{re.escape(key)}` \| `([^`]*)` \|", README, re.M)
        assert row, f"README lacks a row for {key}"
        assert row.group(1) == str(default).replace("'", ""), key


def test_every_command_and_shipped_config_named():
    for name in main.commands:
        assert f"mnist-bp {name}" in README
    for path in packaged_config_dir().glob("*.yaml"):
        assert f"`{path.name}`" in README
    assert "make train" in README and "make test" in README
