"""Augmentation: shapes, dtypes and range kept; deterministic under a seed; identity at zero
strength; colour transforms cover inverted images."""

from dataclasses import replace

import numpy as np
import pytest

from mnist_bp.config import (
    AffineConfig,
    AugmentConfig,
    ColorsConfig,
    ElasticConfig,
    EraseConfig,
    FlipConfig,
    NoiseConfig,
    ShiftConfig,
)
from mnist_bp.data import augment


@pytest.fixture
def batch():
    x = np.zeros((16, 28, 28), np.float32)
    x[:, 8:20, 12:16] = 1.0  # a vertical bar, like a "1"
    x[:, 10:12, 6:22] = 0.5
    return x


def rng(seed=0):
    return np.random.default_rng(seed)


ALL_ON = AugmentConfig(
    shift=ShiftConfig(p=0.8, pixels=3), affine=AffineConfig(p=0.8, degrees=15, scale=0.15,
                                                             shear=0.2),
    elastic=ElasticConfig(p=0.8, alpha=34, sigma=4),
    invert=replace(AugmentConfig().invert, p=0.3), colors=ColorsConfig(p=0.5, min_contrast=0.4),
    noise=NoiseConfig(p=0.5, std=0.1), flip=FlipConfig(p=0.5), erase=EraseConfig(p=0.5))


def test_full_pipeline_keeps_shape_dtype_range_and_is_deterministic(batch):
    original = batch.copy()
    a = augment.augment_batch(batch, rng(1), ALL_ON)
    b = augment.augment_batch(batch, rng(1), ALL_ON)
    c = augment.augment_batch(batch, rng(2), ALL_ON)
    assert a.shape == batch.shape and a.dtype == np.float32
    assert a.min() >= 0 and a.max() <= 1
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert not np.array_equal(a, batch)
    assert np.array_equal(batch, original)  # the input batch is never modified


def test_everything_off_is_identity(batch):
    assert augment.augment_batch(batch, rng(), AugmentConfig()) is batch
    assert not augment.is_active(AugmentConfig()) and augment.is_active(ALL_ON)


def test_shift_exact(batch):
    x = np.zeros((1, 28, 28), np.float32)
    x[0, 10, 10] = 1
    for seed in range(20):
        out = augment.shift(x, rng(seed), pixels=2)
        (r,), (c,) = np.nonzero(out[0])
        assert abs(r - 10) <= 2 and abs(c - 10) <= 2 and out.sum() == 1
    assert np.array_equal(augment.shift(batch, rng(), pixels=0), batch)
    assert np.array_equal(augment.shift(batch, rng(), pixels=3, p=0.0), batch)


def test_shift_equals_each_image_moved_on_its_own():
    """Each image moved by its own drawn offset, zeros coming in: checked against a plain
    per-image slice copy (the draws replayed from the same seed)."""
    batch = np.random.default_rng(2).random((16, 28, 28), dtype=np.float32)
    pixels, p = 3, 0.7
    out = augment.shift(batch, rng(11), pixels=pixels, p=p)
    g = rng(11)
    offsets = g.integers(-pixels, pixels + 1, size=(2, len(batch)))
    offsets *= g.random(len(batch)) < p
    assert (offsets == 0).all(axis=0).any() and (offsets != 0).any(axis=0).any()
    for img, moved, (dy, dx) in zip(batch, out, offsets.T, strict=True):
        expected = np.zeros_like(img)
        expected[max(dy, 0):28 + min(dy, 0), max(dx, 0):28 + min(dx, 0)] = \
            img[max(-dy, 0):28 + min(-dy, 0), max(-dx, 0):28 + min(-dx, 0)]
        np.testing.assert_array_equal(moved, expected)
    assert out.dtype == np.float32 and out.flags.c_contiguous


def test_shift_moves_each_image_independently():
    x = np.zeros((200, 28, 28), np.float32)
    x[:, 14, 14] = 1
    out = augment.shift(x, rng(3), pixels=2)
    positions = {tuple(np.argwhere(img)[0]) for img in out}
    assert len(positions) == 25  # every offset in [-2, 2]^2 shows up


def test_affine_identity_at_zero_strength(batch):
    cfg = AffineConfig(p=1.0, degrees=0, scale=0, shear=0)
    out = augment.geometric(batch, rng(), cfg, None)
    assert np.allclose(out, batch, atol=1e-5)


def test_affine_rotation_by_90_degrees_is_exact():
    x = np.zeros((1, 28, 28), np.float32)
    x[0, 5, 13] = 1.0  # above the centre (13.5, 13.5)... by 8.5 rows, 0.5 col left
    A = np.array([[[0.0, -1.0], [1.0, 0.0]]])
    grid = np.mgrid[0:28, 0:28].astype(np.float32) - 13.5
    coords = np.einsum("nij,jhw->inhw", A.astype(np.float32), grid) + 13.5
    out = augment.resample(x, coords)
    assert out.sum() == pytest.approx(1.0) and out.max() == pytest.approx(1.0)
    assert tuple(np.argwhere(out[0] > 0.5)[0]) == (13, 22)


def test_elastic_alpha_zero_is_identity(batch):
    out = augment.geometric(batch, rng(), None, ElasticConfig(p=1.0, alpha=0.0, sigma=4))
    assert np.array_equal(out, batch)
    field, chosen = augment.elastic_field(rng(), 4, alpha=0.0, sigma=4.0, p=1.0)
    assert not field.any() and chosen.all()


def test_elastic_field_is_smooth_and_scaled():
    field, _ = augment.elastic_field(rng(), 64, alpha=34.0, sigma=4.0, p=1.0)
    assert field.shape == (2, 64, 28, 28) and field.dtype == np.float32
    # smoothing: neighbouring displacements nearly equal; alpha scales the magnitude
    jump = np.abs(np.diff(field, axis=-1)).mean()
    assert jump < 0.25 * np.abs(field).mean()
    half, _ = augment.elastic_field(rng(), 64, alpha=17.0, sigma=4.0, p=1.0)
    assert np.allclose(half * 2, field, atol=1e-5)


def test_elastic_distorts_but_keeps_ink(batch):
    out = augment.geometric(batch, rng(), None, ElasticConfig(p=1.0, alpha=34, sigma=4))
    assert not np.array_equal(out, batch)
    assert abs(out.sum() - batch.sum()) / batch.sum() < 0.25


def test_invert(batch):
    out = augment.invert(batch, rng(), p=1.0)
    assert np.array_equal(out, 1 - batch)
    assert np.array_equal(augment.invert(batch, rng(), p=0.0), batch)


def test_colors_cover_every_combination_including_inverted():
    bg, fg = augment.random_colors(rng(), 10000, 0.4)
    assert np.all(np.abs(fg - bg) >= 0.4 - 1e-12)
    assert 0.45 < np.mean(fg < bg) < 0.55  # dark-on-light (inverted) half the time
    assert bg.min() < 0.02 and bg.max() > 0.98 and fg.min() < 0.02 and fg.max() > 0.98
    x = np.ones((3, 28, 28), np.float32)
    x[:, 0, 0] = 0
    out = augment.colorize(x, np.array([0.0, 1.0, 0.2]), np.array([1.0, 0.0, 0.8]))
    assert np.allclose(out[:, 5, 5], [1.0, 0.0, 0.8]) and np.allclose(out[:, 0, 0], [0, 1, 0.2])


def test_colors_zero_probability_is_identity(batch):
    assert augment.colors(batch, rng(), p=0.0, min_contrast=0.4) is batch


def test_noise_clipped_and_zero_std_identity(batch):
    out = augment.noise(batch, rng(), p=1.0, std=0.5)
    assert out.min() >= 0 and out.max() <= 1 and not np.array_equal(out, batch)
    assert augment.noise(batch, rng(), p=1.0, std=0.0) is batch


def test_probability_selects_a_fraction():
    x = np.zeros((4000, 28, 28), np.float32)
    out = augment.invert(x, rng(), p=0.25)
    assert abs(out[:, 0, 0].mean() - 0.25) < 0.03


def test_smoothing_matrix_matches_a_zero_padded_gaussian_filter():
    ndimage = pytest.importorskip("scipy.ndimage")
    noise = rng().uniform(-1, 1, (3, 28, 28)).astype(np.float32)
    G = augment.gaussian_matrix(4.0)
    ours = G @ noise @ G.T
    theirs = ndimage.gaussian_filter(noise, sigma=(0, 4, 4), mode="constant", truncate=3.0)
    assert np.allclose(ours, theirs, atol=1e-6)


def test_bilinear_resample_matches_scipy_map_coordinates(batch):
    ndimage = pytest.importorskip("scipy.ndimage")
    coords = rng(4).uniform(-3, 31, (2, 16, 28, 28)).astype(np.float32)
    ours = augment.resample(batch, coords)
    n = np.broadcast_to(np.arange(16, dtype=np.float32)[:, None, None], (16, 28, 28))
    theirs = ndimage.map_coordinates(batch, np.stack([n, *coords]), order=1, mode="grid-constant",
                                     cval=0.0, prefilter=False)
    assert np.allclose(ours, theirs, atol=1e-5)


def test_flip_mirrors_exactly_the_chosen_images(batch):
    x = np.arange(4 * 28 * 28, dtype=np.float32).reshape(4, 28, 28) / (4 * 28 * 28)
    out = augment.flip(x, rng(3), 0.5)
    chosen = rng(3).random(4) < 0.5
    assert 0 < chosen.sum() < 4
    for i in range(4):
        want = x[i, :, ::-1] if chosen[i] else x[i]
        assert np.array_equal(out[i], want)
    assert augment.flip(batch, rng(), 0.0) is batch
    assert np.array_equal(augment.flip(x, rng(), 1.0), x[:, :, ::-1])


def test_erase_fills_one_rectangle_of_the_asked_size():
    n = 400
    x = np.full((n, 28, 28), 2.0, np.float32)  # out of [0, 1]: erased pixels are the others
    out = augment.erase(x, rng(4), 1.0, 0.05, 0.2, 3.0)
    erased = out != 2.0
    assert out[erased].min() >= 0 and out[erased].max() < 1
    areas = erased.sum(axis=(1, 2)) / 784
    rows, cols = erased.any(axis=2).sum(axis=1), erased.any(axis=1).sum(axis=1)
    assert np.array_equal(rows * cols, erased.sum(axis=(1, 2)))  # a filled rectangle
    assert areas.min() >= 0.03 and areas.max() <= 0.23  # rounding to whole pixels
    ratio = rows / cols
    assert ratio.min() >= 1 / 3.6 and ratio.max() <= 3.6
    assert ratio.min() < 0.6 and ratio.max() > 1.7  # both orientations occur
    assert np.array_equal(augment.erase(x, rng(4), 0.0, 0.05, 0.2, 3.0), x)


def test_erase_probability_and_area_bounds_from_config():
    from mnist_bp.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="augment.erase.min_area: 0.5 is above max_area 0.2"):
        load_config("default", ["augment.erase.min_area=0.5", "augment.erase.max_area=0.2"])
    x = np.full((2000, 28, 28), 2.0, np.float32)
    out = augment.erase(x, rng(5), 0.3, 0.1, 0.1, 1.0)
    hit = (out != 2.0).any(axis=(1, 2)).mean()
    assert abs(hit - 0.3) < 0.04
