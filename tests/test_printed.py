"""The printed digits shipped for `data.printed`: what they hold, the checks on loading them,
and a run that trains on them."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import dataset_arrays, train_small, write_dataset
from mnist_bp.data import printed
from mnist_bp.errors import UserError


def test_the_shipped_printed_digits_are_every_digit_of_hundreds_of_fonts():
    split = printed.load_printed()
    assert split.images.dtype == np.uint8 and split.images.shape[1:] == (28, 28)
    counts = np.bincount(split.labels, minlength=10)
    assert len(split) == 27_023 and counts.min() >= 2_600 and counts.max() <= 2_800
    fonts = (printed.FOLDER / "fonts.txt").read_text().split("\n")
    assert len([f for f in fonts if f]) == 321
    # inputs as predict makes them: the digit's box is 20 pixels, its strokes' core at 255
    rows = (split.images > 25).any(axis=2)
    heights = rows.shape[1] - rows[:, ::-1].argmax(axis=1) - rows.argmax(axis=1)
    assert np.median(heights) == 20 and np.percentile(split.images.max(axis=(1, 2)), 5) == 255


@pytest.mark.parametrize("damage, message", [
    ("truncate", "the printed digits are damaged (their SHA-256 differs from the one they "
                 "were shipped with); reinstall mnist-bp"),
    ("remove", "the printed digits are missing; reinstall mnist-bp"),
])
def test_damaged_printed_digits_are_one_line_naming_the_file(tmp_path, damage, message):
    folder = tmp_path / "printed"
    shutil.copytree(printed.FOLDER, folder)
    path = folder / printed.IMAGES
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:-100])
    else:
        path.unlink()
    with pytest.raises(UserError) as err:
        printed.load_printed(folder)
    assert str(err.value).startswith(f"{path}: {message}")
    assert "set data.printed: false" in str(err.value)


def test_a_run_with_printed_digits_trains_on_them_and_validates_on_its_own(tmp_path, monkeypatch):
    data = tmp_path / "data"
    write_dataset(data / "mnist", dataset_arrays())  # 600 training images, 100 for validation
    seen = {}
    import mnist_bp.training as training

    real = training.Trainer.__init__

    def spy(self, cfg, train_split, val_split, *args, **kwargs):
        seen["train"], seen["val"] = len(train_split), len(val_split)
        seen["tail"] = train_split.labels[-len(printed.load_printed()):]
        real(self, cfg, train_split, val_split, *args, **kwargs)

    monkeypatch.setattr(training.Trainer, "__init__", spy)
    run = train_small(tmp_path, {"data": {"validation": 100, "printed": True},
                                 "training": {"epochs": 1, "batch_size": 256}})
    assert seen["train"] == 500 + 27_023 and seen["val"] == 100
    assert np.array_equal(seen["tail"], printed.load_printed().labels)
    assert "printed: true" in (run / "config.yaml").read_text()
