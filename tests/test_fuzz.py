"""Property-based fuzzing (Hypothesis) of every parser of outside bytes: the IDX reader, the
image reader and preprocessing, the config loader, the checkpoint loader. Whatever comes in,
the only outcomes are a result or the module's one-line error (a UserError subclass).
Bounded: a fixed number of examples each, seeded, so `make test` stays quick."""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import train_small
from mnist_bp import checkpoint, imageprep
from mnist_bp.config import ConfigError, from_dict, read_yaml
from mnist_bp.data import idx

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


def mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    """`seed` with bytes flipped, cut short, spliced with random bytes, or random bytes."""
    @st.composite
    def mutate(draw):
        data = bytearray(seed)
        for _ in range(draw(st.integers(0, 8))):
            if not data:
                break
            at = draw(st.integers(0, len(data) - 1))
            data[at] = draw(st.integers(0, 255))
        if draw(st.booleans()):
            data = data[:draw(st.integers(0, len(data)))]
        if draw(st.booleans()):
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(max_size=64))
        return bytes(data)
    return st.one_of(mutate(), st.binary(max_size=256))


# --- IDX ------------------------------------------------------------------------------------------

IDX_IMAGES = idx.encode(np.arange(3 * 28 * 28, dtype=np.uint32).astype(np.uint8)
                        .reshape(3, 28, 28))


@FUZZ
@given(data=mutations(IDX_IMAGES), zipped=st.booleans())
def test_idx_reader_gives_images_or_an_idx_error(tmp_path_factory, data, zipped):
    path = tmp_path_factory.mktemp("idx") / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(data, mtime=0) if zipped else data)
    try:
        images = idx.read_images(path, "fix")
    except idx.IdxError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
        return
    assert images.dtype == np.uint8 and images.shape[1:] == (28, 28)


# --- images -------------------------------------------------------------------------------------

def seeds() -> list[bytes]:
    digit = np.zeros((40, 30), np.uint8) + 220
    digit[8:32, 12:18] = 20
    im = Image.fromarray(digit)
    out = []
    for fmt, mode in (("PNG", "L"), ("JPEG", "L"), ("GIF", "P"), ("BMP", "RGB"),
                      ("TIFF", "L"), ("WEBP", "RGB"), ("PNG", "RGBA")):
        buf = io.BytesIO()
        im.convert(mode).save(buf, fmt)
        out.append(buf.getvalue())
    return out


IMAGE_SEEDS = seeds()


@FUZZ
@given(data=st.one_of(*[mutations(s) for s in IMAGE_SEEDS]), invert=st.sampled_from(
    ["auto", "yes", "no"]), number=st.booleans())
def test_image_reader_and_preprocessing_give_inputs_or_an_image_error(data, invert, number):
    try:
        gray = imageprep.read_image(data)
        assert gray.dtype == np.float32 and gray.ndim == 2
        assert np.isfinite(gray).all() and gray.min() >= 0 and gray.max() <= 1
        prepared = (imageprep.prepare_number(gray, invert) if number
                    else [imageprep.prepare(gray, invert)])
    except imageprep.ImageError as exc:
        assert "\n" not in str(exc)
        return
    for p in prepared:
        assert p.image.shape == (28, 28) and np.isfinite(p.image).all()


@FUZZ
@given(array=st.lists(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32),
                               min_size=1, max_size=40), min_size=1, max_size=40))
def test_preprocessing_of_any_float_array(array):
    width = min(len(row) for row in array)
    a = np.array([row[:width] for row in array], np.float32)
    try:
        gray = imageprep.as_gray(a)
        prepared = imageprep.prepare(gray)
    except imageprep.ImageError as exc:
        assert "\n" not in str(exc)
        return
    assert prepared.image.shape == (28, 28) and np.isfinite(prepared.image).all()


# --- configs ------------------------------------------------------------------------------------

CONFIG_SEED = (Path(__file__).resolve().parent.parent / "configs" / "mnist-robust.yaml"
               ).read_bytes()
yaml_text = st.text(alphabet=st.sampled_from(list("abcdeilmnoprstuvxyz_.:-[]{},&*!|>'\"#"
                                                  " \n\t0123456789")), max_size=200)


@FUZZ
@given(data=st.one_of(mutations(CONFIG_SEED), yaml_text.map(str.encode)))
def test_config_loader_gives_a_config_or_a_config_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_bytes(data)
    try:
        cfg = from_dict(read_yaml(path))
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    assert cfg.training.epochs >= 1


# --- checkpoints --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    run = train_small(tmp_path_factory.mktemp("fuzzckpt"), {"training": {"epochs": 1,
                                                                         "batch_size": 64}})
    return (run / "checkpoints" / "best.npz").read_bytes()


@FUZZ
@given(data=st.data())
def test_checkpoint_loader_gives_arrays_or_a_checkpoint_error(tmp_path_factory,
                                                              checkpoint_bytes, data):
    from mnist_bp.model import read

    blob = data.draw(mutations(checkpoint_bytes))
    if data.draw(st.booleans()):  # mutate one member inside an intact zip instead
        members = {}
        with zipfile.ZipFile(io.BytesIO(checkpoint_bytes)) as zf:
            for name in zf.namelist():
                members[name] = zf.read(name)
        name = data.draw(st.sampled_from(sorted(members)))
        members[name] = data.draw(mutations(members[name][:512])) + members[name][512:]
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for k, v in members.items():
                zf.writestr(k, v)
        blob = buf.getvalue()
    path = tmp_path_factory.mktemp("ckpt") / "c.npz"
    path.write_bytes(blob)
    try:
        network, cfg, meta, _ = read(path)
    except checkpoint.CheckpointError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
        return
    assert all(np.isfinite(p).all() for p in network.parameters().values())
