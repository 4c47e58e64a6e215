import gzip
import os

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import dataset_arrays, gz_bytes, write_dataset
from mnist_bp.cli import main
from mnist_bp.data import idx
from mnist_bp.data.cache import Split, load_cached
from mnist_bp.data.datadir import load_dataset, resolve_data_dir, split_validation
from mnist_bp.data.registry import FILENAMES
from mnist_bp.errors import UserError


def test_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("MNIST_BP_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir() == tmp_path / "xdg" / "mnist-bp"
    monkeypatch.setenv("MNIST_BP_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.delenv("MNIST_BP_DATA_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_dir() == tmp_path / "home" / ".cache" / "mnist-bp"


def test_cache_round_trip_is_uint8_read_as_checked(data_dir, small_arrays):
    ds = load_cached(data_dir / "mnist")
    # in memory: the bytes hashed are the bytes used (a memory map could change under it)
    assert not isinstance(ds.train.images, np.memmap) and ds.train.images.dtype == np.uint8
    for split in ("train", "test"):
        assert np.array_equal(getattr(ds, split).images, small_arrays[f"{split}_images"])
        assert np.array_equal(getattr(ds, split).labels, small_arrays[f"{split}_labels"])
    assert (data_dir / "mnist" / "cache" / "manifest.json").is_file()


def test_cache_rebuilt_when_sources_change(data_dir):
    folder = data_dir / "mnist"
    load_cached(folder)
    other = dataset_arrays(30, 10, seed=9)
    (folder / FILENAMES["train_images"]).write_bytes(gz_bytes(other["train_images"]))
    (folder / FILENAMES["train_labels"]).write_bytes(gz_bytes(other["train_labels"]))
    ds = load_cached(folder)
    assert len(ds.train) == 30 and np.array_equal(ds.train.labels, other["train_labels"])


def test_cache_killed_mid_write_leaves_usable_dir(data_dir, small_arrays):
    folder = data_dir / "mnist"
    load_cached(folder)
    cache = folder / "cache"
    # what a process killed while writing leaves: a stray temp file, a half-written npy
    # under a temporary name, no manifest
    (cache / ".train_images.npy.x1.tmp").write_bytes(b"\x93NUMPY half")
    (cache / "manifest.json").unlink()
    (cache / "train_images.npy").write_bytes(b"garbage")
    ds = load_cached(folder)
    assert np.array_equal(ds.train.images, small_arrays["train_images"])


def flip_byte_in_place(path, offset):
    """Change one byte, keeping the file's size and its modification time."""
    import os

    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_cached_bytes_changed_in_place_are_never_scored(data_dir, small_arrays, trained_run):
    """A cached array whose bytes changed after it was written (same size, same time) is
    caught by its SHA-256: the cache is rebuilt from the IDX files, and what is scored is the
    real test set."""
    folder = data_dir / "mnist"
    load_cached(folder)
    cache = folder / "cache"
    for role in ("test_labels", "test_images"):
        flip_byte_in_place(cache / f"{role}.npy", 200)
    said = []
    ds = load_cached(folder, log=said.append)
    assert np.array_equal(ds.test.labels, small_arrays["test_labels"])
    assert np.array_equal(ds.test.images, small_arrays["test_images"])
    assert any("its bytes changed since the cache was written; rebuilding" in m for m in said)
    # ...and evaluate scores the real labels: the same accuracy as on an untouched cache
    from mnist_bp.model import load

    model = load(trained_run / "checkpoints" / "best.npz")
    clean = model.evaluate(data_dir=trained_run.parent / "data")["accuracy"]
    flip_byte_in_place(cache / "test_labels.npy", 200)
    assert model.evaluate(data_dir=data_dir)["accuracy"] == clean


def test_an_idx_file_changed_in_place_after_verification_is_one_line(data_dir):
    folder = data_dir / "mnist"
    load_cached(folder)
    idx_file = folder / FILENAMES["test_labels"]
    flip_byte_in_place(idx_file, 30)  # inside the gzip stream: other bytes, same size and time
    flip_byte_in_place(folder / "cache" / "test_labels.npy", 200)  # and the cache is rebuilt
    with pytest.raises(UserError) as err:
        load_cached(folder)
    assert str(err.value).startswith(f"{idx_file}: its bytes changed after it was verified")
    assert "mnist-bp download --dataset mnist --force" in str(err.value)


def test_missing_dataset_without_fetch(tmp_path):
    with pytest.raises(UserError, match="mnist is not downloaded; run `mnist-bp download"):
        load_dataset("mnist", tmp_path, fetch=False)


def test_validation_split_holds_out_the_last_images():
    images = np.arange(10, dtype=np.uint8)[:, None, None] * np.ones((1, 28, 28), np.uint8)
    train, val = split_validation(Split(images, np.arange(10, dtype=np.uint8)), 3)
    assert list(train.labels) == list(range(7)) and list(val.labels) == [7, 8, 9]
    assert split_validation(train, 0)[1] is None
    with pytest.raises(UserError, match="data.validation: 7 leaves no training images"):
        split_validation(train, 7)


# --- download --from -----------------------------------------------------------------------

def run_import(src, dest):
    return CliRunner().invoke(main, ["download", "--from", str(src), "--data-dir", str(dest)])


def test_import_gzip_and_raw(tmp_path, small_arrays):
    src = write_dataset(tmp_path / "src", small_arrays)
    raw = src / FILENAMES["test_images"]
    raw.with_suffix("").write_bytes(gzip.decompress(raw.read_bytes()))  # uncompressed copy
    raw.unlink()
    result = run_import(src, tmp_path / "d")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert sum("does NOT match the official checksum (imported as is)" in line
               for line in lines) == 4
    assert "mnist ready in" in lines[-1] and "600 training and 200 test images" in lines[-1]
    ds = load_cached(tmp_path / "d" / "mnist")
    assert np.array_equal(ds.test.images, small_arrays["test_images"])
    # imported files are used as they are: plain download does not re-fetch them
    again = CliRunner().invoke(main, ["download", "--data-dir", str(tmp_path / "d"),
                                      "--mirror", "http://127.0.0.1:9/", "--retries", "0"])
    assert again.exit_code == 0 and "present" in again.stderr


def _truncated_gz(arrays):
    return gz_bytes(arrays["train_images"])[:-100]


BAD_INPUTS = {
    "truncated gz": ("train_images", _truncated_gz, "gzip data is truncated"),
    "html page": ("train_images", lambda a: b"<!DOCTYPE html><html>Not Found</html>",
                  "not an IDX file"),
    "empty file": ("train_labels", lambda a: b"", "file is empty"),
    "wrong magic": ("test_images", lambda a: b"\x00\x00\x09\x03" + idx.encode(
        a["test_images"])[4:], "dtype code 0x09 is not uint8"),
    "short payload": ("test_images", lambda a: idx.encode(a["test_images"])[:-784],
                      "payload is shorter than its header says"),
    "labels out of range": ("test_labels", lambda a: idx.encode(
        np.where(a["test_labels"] == 3, 12, a["test_labels"]).astype(np.uint8)),
        "label 12 is out of range"),
    "counts differ": ("train_labels", lambda a: idx.encode(a["train_labels"][:-1]),
                      "holds 600 images but"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_import_bad_input_one_line_nothing_written(tmp_path, small_arrays, case):
    role, make, message = BAD_INPUTS[case]
    src = write_dataset(tmp_path / "src", small_arrays)
    (src / FILENAMES[role]).write_bytes(make(small_arrays))
    dest = tmp_path / "d"
    result = run_import(src, dest)
    assert result.exit_code == 1
    assert result.stdout == ""
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: ") and message in err[0]
    assert str(src / FILENAMES[role]) in err[0]
    assert not (dest / "mnist").exists() or not [
        p for p in os.listdir(dest / "mnist") if not p.startswith(".")]


def test_import_missing_file(tmp_path, small_arrays):
    src = write_dataset(tmp_path / "src", small_arrays)
    (src / FILENAMES["test_labels"]).unlink()
    result = run_import(src, tmp_path / "d")
    assert result.exit_code == 1
    assert ("no t10k-labels-idx1-ubyte.gz (or uncompressed t10k-labels-idx1-ubyte) there"
            in result.stderr)
    assert not (tmp_path / "d" / "mnist").exists()


def test_corrupt_file_in_data_dir_names_fix(data_dir):
    (data_dir / "mnist" / FILENAMES["train_images"]).write_bytes(b"<html>oops</html>")
    with pytest.raises(UserError, match="not an IDX file.*mnist-bp download --dataset mnist "
                                        "--force"):
        load_cached(data_dir / "mnist")


def test_real_mnist_10k_import_if_present(tmp_path):
    src = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist-10k")
    if not os.path.isdir(src):
        pytest.skip("../shared/data/mnist-10k not present")
    result = run_import(src, tmp_path)
    assert result.exit_code == 0, result.output
    assert "10000 training and 10000 test images" in result.stdout
    assert result.stdout.count("does NOT match the official checksum") == 4


@pytest.mark.parametrize("kind, mean, std", [("scale", 0.0, 1.0), ("center", 0.5, 0.5)])
def test_normalize_scale_and_center(kind, mean, std):
    """scale: pixel/255; center: 2 pixel/255 - 1, where inverting the colours (255 - pixel)
    negates the input exactly, from uint8 and from [0, 1] floats (after augmentation) alike."""
    from mnist_bp.data.batches import Normalizer

    u8 = np.array([[0, 51, 255, 102]], np.uint8)
    norm = Normalizer.fit(kind, u8)
    assert (norm.mean, norm.std) == (mean, std)
    out = norm.from_uint8(u8, np.empty(u8.shape, np.float32))
    expected = {"scale": [0.0, 0.2, 1.0, 0.4], "center": [-1.0, -0.6, 1.0, -0.2]}[kind]
    np.testing.assert_allclose(out[0], expected, atol=1e-6)
    unit = norm.from_unit(u8.astype(np.float32) / 255, np.empty(u8.shape, np.float32))
    np.testing.assert_allclose(unit, out, atol=1e-6)
    if kind == "center":
        inverted = norm.from_uint8(255 - u8, np.empty(u8.shape, np.float32))
        np.testing.assert_allclose(inverted, -out, atol=1e-6)


def test_normalize_per_image():
    """image: each image to mean 0 and standard deviation 1. Inverting its colours negates
    it, other foreground/background intensities (bg + (fg - bg) x) give it back up to the
    sign of fg - bg, and an image of one intensity becomes zeros, not NaN. The mode travels
    in a checkpoint's meta (to_dict) and old metas without it load as before."""
    from mnist_bp.data.batches import Normalizer

    u8 = np.array([[0, 51, 255, 102], [9, 9, 9, 9]], np.uint8)
    norm = Normalizer.fit("image", u8)
    out = norm.from_uint8(u8, np.empty(u8.shape, np.float32))
    x = np.array([0, 0.2, 1, 0.4])  # the first image, std sqrt(0.14)
    np.testing.assert_allclose(out[0], (x - 0.4) / np.sqrt(0.14), atol=1e-6)
    np.testing.assert_array_equal(out[1], np.zeros(4, np.float32))
    inverted = norm.from_uint8(255 - u8, np.empty(u8.shape, np.float32))
    np.testing.assert_allclose(inverted, -out, atol=1e-6)
    unit = u8.astype(np.float32) / 255
    for fg, bg, sign in ((0.9, 0.3, 1), (0.1, 0.7, -1)):
        colored = norm.from_unit((bg + (fg - bg) * unit).astype(np.float32),
                                 np.empty(u8.shape, np.float32))
        np.testing.assert_allclose(colored[0], sign * out[0], atol=1e-5)
    assert Normalizer(**norm.to_dict()).per_image is True
    assert Normalizer(mean=0.1, std=0.3).per_image is False
