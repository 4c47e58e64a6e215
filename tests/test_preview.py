import numpy as np
from click.testing import CliRunner
from PIL import Image

from mnist_bp.cli import main
from mnist_bp.preview import GRID_COLUMNS, PAD, grid, interleave


def test_grid_places_images_exactly():
    images = np.zeros((3, 28, 28), np.float32)
    images[1] = 1.0
    mosaic = grid(images, columns=2)
    cell = 28 + PAD
    assert mosaic.shape == (2 * cell + PAD, 2 * cell + PAD) and mosaic.dtype == np.uint8
    assert (mosaic[PAD:PAD + 28, PAD:PAD + 28] == 0).all()
    assert (mosaic[PAD:PAD + 28, PAD + cell:PAD + cell + 28] == 255).all()
    assert mosaic[0, 0] == 128  # the gaps


def test_interleave_rows_of_originals_and_augmented():
    a = np.zeros((10, 28, 28), np.float32)
    b = np.ones((10, 28, 28), np.float32)
    out = interleave(a, b, columns=8)
    assert out.shape == (32, 28, 28)
    assert out[:8].max() == 0 and out[8:16].min() == 1 and out[16:18].max() == 0
    assert out[24:26].min() == 1 and out[26:].max() == 0  # padding of the short row


def test_augment_preview_writes_png(tmp_path, data_dir):
    out = tmp_path / "p.png"
    result = CliRunner().invoke(main, ["augment-preview", "mnist-robust", "--data-dir",
                                       str(data_dir), "--out", str(out), "--count", "16"])
    assert result.exit_code == 0, result.output
    image = Image.open(out)
    cell = 28 + PAD
    assert image.size == ((GRID_COLUMNS * cell + PAD) * 3, (4 * cell + PAD) * 3)
    # the file holds the mosaic: originals are the training images the first epoch shuffles
    # first (in index order), each row followed by the same images augmented
    from mnist_bp import rng
    from mnist_bp.data.datadir import load_dataset

    mosaic = np.asarray(image.convert("L"))[::3, ::3]
    train = load_dataset("mnist", data_dir).train
    order = np.sort(rng.stream(0, rng.SHUFFLE, 0).permutation(len(train))[:16])
    cell = 28 + PAD

    def at(row, col):
        top, left = PAD + row * cell, PAD + col * cell
        return mosaic[top:top + 28, left:left + 28]

    for k in (0, 5, 8, 15):
        row, col = divmod(k, GRID_COLUMNS)
        assert np.array_equal(at(2 * row, col), np.asarray(train.images[order[k]]))
        assert not np.array_equal(at(2 * row + 1, col), at(2 * row, col))  # augmented
