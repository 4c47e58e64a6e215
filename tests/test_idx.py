import gzip

import numpy as np
import pytest

from mnist_bp.data import idx


def test_round_trip_gzip_and_raw(tmp_path):
    images = np.arange(3 * 28 * 28, dtype=np.uint32).reshape(3, 28, 28).astype(np.uint8)
    labels = np.array([0, 9, 4], np.uint8)
    idx.write(tmp_path / "i.gz", images)
    idx.write(tmp_path / "l", labels)
    assert np.array_equal(idx.read_images(tmp_path / "i.gz", "fix"), images)
    assert np.array_equal(idx.read_labels(tmp_path / "l", "fix"), labels)


def test_header_bytes_exact():
    data = idx.encode(np.array([1, 2, 3], np.uint8))
    assert data == b"\x00\x00\x08\x01\x00\x00\x00\x03\x01\x02\x03"


@pytest.mark.parametrize("content, message", [
    (b"", "file is empty"),
    (b"<html><body>404 Not Found</body></html>", "not an IDX file"),
    (b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00", "dtype code 0x0d is not uint8"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x02", "header is truncated"),
    (idx.encode(np.zeros((2, 28, 28), np.uint8))[:-5], "payload is shorter than its header says"),
    (idx.encode(np.zeros((2, 28, 28), np.uint8)) + b"x", "payload is longer"),
    (idx.encode(np.zeros(4, np.uint8)), "has 1 dimensions where 3 were expected"),
    (idx.encode(np.zeros((2, 20, 20), np.uint8)), "images are 20x20, not 28x28"),
    (gzip.compress(idx.encode(np.zeros((2, 28, 28), np.uint8)))[:-20], "gzip data is truncated"),
])
def test_bad_image_files_name_file_and_fix(tmp_path, content, message):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(idx.IdxError) as err:
        idx.read_images(path, "run the fix")
    text = str(err.value)
    assert message in text and str(path) in text and text.endswith("run the fix")
    assert "\n" not in text


def test_labels_out_of_range(tmp_path):
    path = tmp_path / "l"
    path.write_bytes(idx.encode(np.array([0, 3, 10], np.uint8)))
    with pytest.raises(idx.IdxError, match="label 10 is out of range 0..9"):
        idx.read_labels(path, "fix")


def test_corrupt_gzip_crc(tmp_path):
    blob = bytearray(gzip.compress(idx.encode(np.zeros(5, np.uint8))))
    blob[-8] ^= 0xFF  # CRC32 of the payload
    path = tmp_path / "l.gz"
    path.write_bytes(bytes(blob))
    with pytest.raises(idx.IdxError, match="gzip data is corrupt"):
        idx.read_labels(path, "fix")


def test_missing_file(tmp_path):
    with pytest.raises(idx.IdxError, match="file not found; fix"):
        idx.read_labels(tmp_path / "nope", "fix")


def test_count_mismatch():
    with pytest.raises(idx.IdxError, match="holds 2 images but l holds 3 labels"):
        idx.check_pair(np.zeros((2, 28, 28)), np.zeros(3), "i", "l", "fix")
