"""Hostile and broken input at every entry point: images, configs and search spaces,
checkpoints, run directories turned into reports, saved inputs, run directories written by
two processes, mirrors that send too much, damaged study files. Each case must end in one
line naming the thing (exit status 1 for a command), in bounded time and memory, with
nothing lost. The server's cases are in test_serve_hostile.py."""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import dataset_arrays, gz_bytes, spec_for, train_small, write_dataset
from httpserver import FileServer
from mnist_bp import checkpoint, imageprep
from mnist_bp.cli import main
from mnist_bp.data.download import download_dataset
from mnist_bp.data.registry import FILENAMES, ROLES
from mnist_bp.errors import UserError

ALLOWED = "not a PNG, JPEG, GIF, BMP, TIFF or WebP image"


def invoke(*args, **kwargs):
    return CliRunner().invoke(main, [str(a) for a in args], **kwargs)


def one_line_error(result, *fragments):
    """Exit 1, one `Error: ...` line holding every fragment, no traceback."""
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# --- images -------------------------------------------------------------------------------------

def encoded(image: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height and whose data is a few bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b""))


def patched(data: bytes, offset: int, packed: bytes) -> bytes:
    return data[:offset] + packed + data[offset + len(packed):]


def size_bombs() -> dict[str, bytes]:
    """Small files of every allowed format whose headers declare far more pixels than
    allowed (50 megapixels)."""
    small = Image.new("L", (8, 8), 0)
    bmp = encoded(small, "BMP")
    gif = encoded(small, "GIF")
    jpeg = encoded(small, "JPEG")
    sof = jpeg.find(b"\xff\xc0")
    tiff = encoded(small, "TIFF")
    webp = encoded(Image.new("RGB", (8, 8)), "WEBP", lossless=True)
    vp8l = webp.find(b"VP8L") + 8
    bits = (16383) | (16383 << 14)  # width - 1 and height - 1, 14 bits each
    return {
        "png": png_declaring(20000, 20000),
        "bmp": patched(bmp, 18, struct.pack("<ii", 20000, 20000)),
        "gif": patched(patched(gif, 6, struct.pack("<HH", 65535, 65535)),
                       gif.find(b"\x2c") + 5, struct.pack("<HH", 65535, 65535)),
        "jpeg": patched(jpeg, sof + 5, struct.pack(">HH", 65000, 65000)),
        "tiff": tiff_declaring(tiff, 20000, 20000),
        "webp": patched(webp, vp8l + 1, struct.pack("<I", bits)),
    }


def tiff_declaring(tiff: bytes, width: int, height: int) -> bytes:
    """A little-endian TIFF with its ImageWidth/ImageLength tags set to width x height."""
    ifd = struct.unpack("<I", tiff[4:8])[0]
    count = struct.unpack("<H", tiff[ifd:ifd + 2])[0]
    out = bytearray(tiff)
    for k in range(count):
        entry = ifd + 2 + 12 * k
        tag, kind = struct.unpack("<HH", tiff[entry:entry + 4])
        if tag in (256, 257):
            value = width if tag == 256 else height
            packed = struct.pack("<H", value) + b"\0\0" if kind == 3 else struct.pack("<I", value)
            out[entry + 8:entry + 12] = packed
    return bytes(out)


@pytest.mark.parametrize("fmt", ["png", "bmp", "gif", "jpeg", "tiff", "webp"])
def test_declared_size_is_refused_before_decoding(fmt, monkeypatch):
    from PIL import ImageFile

    def no_decoding(self):
        raise AssertionError("pixels decoded before the size was checked")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(imageprep.ImageError, match="more than the 50,000,000"):
        imageprep.read_image(size_bombs()[fmt])


def ico_with_huge_png() -> bytes:
    """An ICO whose directory says 256x256 and whose embedded PNG is 13,300 x 13,300 pixels:
    Pillow's ICO plugin decodes it while *opening* the file (about 700 MB)."""
    inner = png_declaring(13300, 13300)
    header = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(inner), 6 + 16)
    return header + entry + inner


@pytest.mark.parametrize("fmt", ["ICO", "TGA", "PCX", "PPM", "SGI", "IM", "DDS", "ICNS"])
def test_formats_off_the_list_are_refused(fmt, tmp_path):
    if fmt == "ICO":
        data = ico_with_huge_png()
    else:
        try:
            data = encoded(Image.new("RGBA" if fmt in ("DDS", "ICNS") else "RGB",
                                     (32, 32), (255, 255, 255)), fmt)
        except (KeyError, OSError, ValueError) as exc:
            pytest.skip(f"Pillow cannot write {fmt} here ({exc})")
    with pytest.raises(imageprep.ImageError) as info:
        imageprep.read_image(data)
    assert str(info.value) == ALLOWED


@pytest.mark.parametrize("error", [NotImplementedError("BLP"), struct.error("unpack"),
                                   ZeroDivisionError("division"), IndexError("index"),
                                   TypeError("type"), KeyError("key"), RuntimeError("x")])
def test_any_decoder_failure_is_the_file_s_one_line_error(error, monkeypatch):
    from PIL import ImageOps

    def fail(image):
        raise error

    monkeypatch.setattr(ImageOps, "exif_transpose", fail)
    with pytest.raises(imageprep.ImageError, match="truncated or corrupt image"):
        imageprep.read_image(encoded(Image.new("L", (40, 40)), "PNG"))


def float_tiff(values: np.ndarray) -> bytes:
    return encoded(Image.fromarray(values.astype(np.float32), "F"), "TIFF")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels_are_one_line(bad):
    digit = np.zeros((28, 28), np.float32)
    digit[8:20, 12:16] = 1.0
    digit[3, 3] = bad
    with pytest.raises(imageprep.ImageError, match="NaN or infinite"):
        imageprep.read_image(float_tiff(digit))
    big = np.zeros((80, 80), np.float32)
    big[20:60, 35:45] = 1.0
    big[0, 0] = bad
    with pytest.raises(imageprep.ImageError, match="NaN or infinite"):
        imageprep.read_image(float_tiff(big))


@pytest.mark.parametrize("step", [imageprep.prepare, imageprep.prepare_number])
def test_the_steps_check_arrays_as_inputs_of_does(step):
    """`prepare` and `prepare_number` called directly take arrays as `inputs_of` does: NaN
    or infinity is its own one-line error, not a blank image, and integer levels are scaled
    by their type (uint16 65535 is full ink), not clipped to 1 (where a digit drawn at
    1000 of 65535 would be as dark as one at 65535)."""
    page = np.zeros((60, 60), np.float32)
    page[10:50, 26:34] = 1.0
    with pytest.raises(imageprep.ImageError, match="NaN or infinite"):
        step(np.where(page > 0, np.nan, 0))
    with pytest.raises(imageprep.ImageError, match="must be 2-D"):
        step(page[None])
    want = [p.image for p in imageprep.inputs_of(page, number=step is imageprep.prepare_number)]
    got = step((page * 65535).astype(np.uint16))
    got = [got.image] if step is imageprep.prepare else [p.image for p in got]
    assert len(got) == len(want) == 1
    np.testing.assert_allclose(got[0], want[0], atol=1e-6)
    # faint ink (1000 of 65535 on 0) is a blank page, not a full-contrast digit
    with pytest.raises(imageprep.ImageError, match="blank"):
        step((page * 1000).astype(np.uint16))
    # other integers (numpy's default int64) are 8-bit levels when they fit, else 16-bit
    np.testing.assert_allclose(first(step((page * 255).astype(np.int64))), want[0], atol=1e-6)
    np.testing.assert_allclose(first(step((page * 60000).astype(np.int32))), want[0],
                               atol=1e-6)
    with pytest.raises(imageprep.ImageError, match=r"^integer levels must lie in 0\.\.255 or "
                                                   r"0\.\.65535, not -1\.\.0; give floats"):
        step(-page.astype(np.int64))


@pytest.mark.parametrize("array, message", [
    (np.full((40, 40), 0.5).astype(object), "must hold numbers .* not object"),
    (np.full((40, 40), "a"), "must hold numbers .* not <U1"),
    (np.zeros((0, 10), np.uint8), r"must be 2-D \(H, W\) with pixels, not \(0, 10\)"),
    (np.zeros((5, 0), np.float32), r"not \(5, 0\)"),
])
def test_arrays_that_are_no_image_are_one_line(array, message):
    for step in (imageprep.prepare, imageprep.prepare_number, imageprep.as_gray):
        with pytest.raises(imageprep.ImageError, match=message):
            step(array)


def test_a_float32_gray_array_is_not_copied():
    # inputs_of checks an array, then prepare checks it again: a 50-megapixel array must not
    # cost a copy each time
    a = np.full((50, 60), 0.5, np.float32)
    assert imageprep.as_gray(a) is a
    assert imageprep.as_gray(a.astype(np.float64)) is not a


def first(prepared) -> np.ndarray:
    return (prepared if isinstance(prepared, imageprep.Prepared) else prepared[0]).image


@pytest.fixture(scope="module")
def checkpoint_path(tmp_path_factory):
    return train_small(tmp_path_factory.mktemp("hostile")) / "checkpoints" / "best.npz"


def test_predict_answers_the_good_file_and_names_each_bad_one(checkpoint_path, tmp_path):
    good = tmp_path / "good.png"
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255
    good.write_bytes(encoded(Image.fromarray(digit), "PNG"))
    bad = {"bomb.png": size_bombs()["png"], "icon.png": ico_with_huge_png(),
           "nan.tif": float_tiff(np.full((28, 28), np.nan)),
           "cut.jpg": encoded(Image.new("L", (64, 64), 200), "JPEG")[:100],
           "text.webp": b"RIFF\0\0\0\0WEBPVP8 garbage"}
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
    result = invoke("predict", checkpoint_path, good, *[tmp_path / n for n in bad], "--json")
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert [p["file"] for p in out["predictions"]] == [str(good)]
    assert sorted(Path(e["file"]).name for e in out["errors"]) == sorted(bad)
    assert all("\n" not in e["error"] for e in out["errors"])
    assert "Traceback" not in result.output
    stderr_lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(stderr_lines) == len(bad)


# --- configs and search spaces ------------------------------------------------------------------

ALIAS_BOMB = "seed: [&a [1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], " + ", ".join(
    f"&{c} [{','.join([f'*{p}'] * 9)}]" for p, c in zip("bcdefgh", "cdefghi", strict=True)) + "]\n"

HOSTILE_CONFIGS = {
    "alias bomb": (ALIAS_BOMB.encode(), "YAML aliases (*name) are not allowed"),
    "deep nesting": (b"seed: " + b"[" * 100_000, "nested more than 20 levels deep"),
    "giant integer": (b"seed: " + b"9" * 100_001, "a value it cannot read"),
    "huge network": (b"model: {hidden: [1000000000000]}", "model.hidden[0]"),
    "big network": (b"model: {hidden: [50000, 50000]}", "more than the 50,000,000 allowed"),
    "infinite float": (b"augment: {elastic: {sigma: .inf}}", "augment.elastic.sigma"),
    "nan float": (b"optimizer: {learning_rate: .nan}", "a finite number"),
    "not utf-8": (b"seed: 0\nmodel: {activation: \xff\xfe}\n", "not UTF-8 text"),
    "huge file": (b"# " + b"x" * 1_100_000 + b"\nseed: 0\n", "more than the 1,000,000"),
    "giant epochs": (b"training: {epochs: 100000000000}", "training.epochs"),
    "giant seed": (b"seed: 99999999999999999999999999999", "seed"),
    "odd bool tag": (b"seed: !!bool maybe", "a value it cannot read"),
    "odd timestamp": (b"seed: !!timestamp 99999-01-01", "a value it cannot read"),
    "sexagesimal": (b"seed: " + b":".join([b"59"] * 3000) + b".5", "a value it cannot read"),
    "giant hex": (b"seed: 0x" + b"f" * 5000, "too long to show"),
    "a folder": (None, "not a regular file"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_CONFIGS))
def test_hostile_configs_are_one_line_in_bounded_time(name, tmp_path):
    data, fragment = HOSTILE_CONFIGS[name]
    path = tmp_path / "hostile.yaml"
    if data is None:
        path.mkdir()
    else:
        path.write_bytes(data)
    start = time.monotonic()
    result = invoke("train", path, "--data-dir", tmp_path / "data", "--run-dir", tmp_path / "r")
    assert time.monotonic() - start < 10
    one_line_error(result, str(path), fragment)
    assert len(result.output) < 600
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_hostile_set_values_are_one_line(tmp_path):
    for value, fragment in [("[&a [1,2], *a]", "YAML aliases"), ("[" * 5000, "nested more"),
                            (".inf", "a finite number")]:
        result = invoke("train", "--set", "data.printed=false",
                        "--set", f"optimizer.learning_rate={value}", "--data-dir",
                        tmp_path, "--run-dir", tmp_path / "r")
        one_line_error(result, fragment)


@pytest.mark.parametrize("space, fragment", [
    (ALIAS_BOMB, "YAML aliases"),
    ("optimizer.learning_rate: {low: 0.001, high: .inf}\n", "finite number"),
    ("training.batch_size: {low: 16, high: 64, step: 0.5}\n", "takes whole numbers; step"),
    ("model.hidden: {choices: [[10000000000]]}\n", "model.hidden[0]"),
    ("optimizer.learning_rate: {low: 1e-3, high: " + "9" * 5000 + "}\n", "cannot read"),
    ("optimizer.learning_rate: {1: 2, foo: 3}\n", "unknown field '1'"),
    ("training.batch_size: {low: 16, high: 64, step: 0x" + "f" * 400 + "}\n", "step must be"),
    ("optimizer.learning_rate: {low: 1e-4, high: 1e-2, log: true}\n", None),
])
def test_hostile_search_spaces_are_one_line(space, fragment, tmp_path, data_dir):
    pytest.importorskip("optuna")
    path = tmp_path / "space.yaml"
    path.write_text(space)
    result = invoke("tune", "default", "--set", "data.printed=false",
                    "--space", path, "--trials", 1, "--data-dir", data_dir,
                    "--out", tmp_path / "out", "--set", "data.validation=100", "--set",
                    "training.epochs=1", "--set", "model.hidden=[8]")
    if fragment is None:  # YAML 1.1 reads 1e-4 as a string: still a number here
        assert result.exit_code == 0, result.output
    else:
        one_line_error(result, fragment)


# --- checkpoints --------------------------------------------------------------------------------

def npy_bytes(array=None, header_shape=None, dtype="<f4", payload=b"") -> bytes:
    """An .npy member; with header_shape, a header declaring that shape over `payload`."""
    if array is not None:
        buf = io.BytesIO()
        np.save(buf, array, allow_pickle=True)
        return buf.getvalue()
    header = repr({"descr": dtype, "fortran_order": False, "shape": header_shape})
    header = header + " " * (63 - (10 + len(header)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + payload


def rewrite(src: Path, dst: Path, change=None, extra: dict[str, bytes] | None = None) -> Path:
    """A copy of checkpoint `src` with members changed (name -> bytes, None drops it)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if change and info.filename in change:
                data = change[info.filename]
                if data is None:
                    continue
            zout.writestr(info.filename, data)
        for name, data in (extra or {}).items():
            zout.writestr(name, data)
    return dst


def meta_of(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as npz:
        return json.loads(str(npz["meta"]))


def with_meta(src: Path, dst: Path, meta) -> Path:
    return rewrite(src, dst, {"meta.npy": npy_bytes(np.array(json.dumps(meta)))})


def forged_size(src: Path, dst: Path, member: str, size: int) -> Path:
    """The checkpoint with `member`'s uncompressed size in the zip directory set to `size`
    (a zip bomb's declaration, without its gigabytes)."""
    data = bytearray(src.read_bytes())
    name = member.encode()
    at = data.find(b"PK\x01\x02" + b"", 0)
    while at != -1:
        name_len = struct.unpack("<H", data[at + 28:at + 30])[0]
        if data[at + 46:at + 46 + name_len] == name:
            data[at + 24:at + 28] = struct.pack("<I", size)
        at = data.find(b"PK\x01\x02", at + 4)
    dst.write_bytes(bytes(data))
    return dst


class Boom:
    """Unpickling this writes a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "code ran"))


def hostile_checkpoints(src: Path, tmp: Path) -> dict[str, tuple[Path, str]]:
    meta = meta_of(src)
    shape = np.load(src)["layers.0.W"].shape
    marker = tmp / "pwned"
    huge_cfg = json.loads(json.dumps(meta))
    huge_cfg["config"]["model"]["hidden"] = [10 ** 12]
    return {
        "zip bomb": (forged_size(src, tmp / "bomb.npz", "layers.0.W.npy", 3 << 30),
                     "is not an array of a reasonable size"),
        "lying header": (rewrite(src, tmp / "lie.npz", {
            "layers.0.W.npy": npy_bytes(header_shape=(10 ** 12,), payload=b"\0" * 16)}),
            "declares a shape (1000000000000,) larger than its data"),
        "missing entry": (rewrite(src, tmp / "missing.npz", {"layers.1.b.npy": None}),
                          "parameter 'layers.1.b' is missing"),
        "complex weights": (rewrite(src, tmp / "complex.npz", {
            "layers.0.W.npy": npy_bytes(np.zeros(shape, np.complex64))}),
            "holds complex64 values, not floats"),
        "string weights": (rewrite(src, tmp / "str.npz", {
            "layers.0.W.npy": npy_bytes(np.full(shape, "x"))}), "not floats"),
        "nan weights": (rewrite(src, tmp / "nan.npz", {
            "layers.0.W.npy": npy_bytes(np.full(shape, np.nan, np.float32))}),
            "'layers.0.W' holds NaN or infinite values"),
        "pickled object": (rewrite(src, tmp / "pickle.npz", {
            "layers.0.W.npy": npy_bytes(np.array([Boom(str(marker))], dtype=object))}),
            "holds object values"),
        "meta is a list": (with_meta(src, tmp / "list.npz", [1, 2]),
                           "not an mnist-bp checkpoint"),
        "no normalisation": (with_meta(src, tmp / "nonorm.npz", {
            k: v for k, v in meta.items() if k != "normalization"}),
            "input normalisation is missing or invalid"),
        "huge network in meta": (with_meta(src, tmp / "huge.npz", huge_cfg),
                                 "its config is invalid"),
        "too many entries": (rewrite(src, tmp / "many.npz", extra={
            f"junk{i}.npy": npy_bytes(np.zeros(1, np.float32)) for i in range(1001)}),
            "entries is more than a checkpoint has"),
    }


def test_hostile_checkpoints_are_one_line_naming_the_file(checkpoint_path, tmp_path, data_dir):
    cases = hostile_checkpoints(checkpoint_path, tmp_path)
    for name, (path, fragment) in cases.items():
        start = time.monotonic()
        result = invoke("evaluate", path, "--data-dir", data_dir)
        assert time.monotonic() - start < 10, name
        one_line_error(result, str(path), fragment)
    assert not (tmp_path / "pwned").exists()  # no code ran


# --- reports ------------------------------------------------------------------------------------

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def test_hostile_strings_in_a_run_are_escaped_in_the_report(tmp_path, trained_run):
    pytest.importorskip("matplotlib")
    import shutil

    run = tmp_path / '<img src=x onerror=alert(1)>$a$'
    shutil.copytree(trained_run, run)
    shutil.rmtree(run / "report", ignore_errors=True)
    config = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(f"# {HOSTILE}\n{config}")
    rows = (run / "metrics.jsonl").read_text().splitlines()
    first = json.loads(rows[0])
    rows[0] = json.dumps({**first, "train_loss": HOSTILE, "note": HOSTILE})
    rows.insert(1, json.dumps({**first, "epoch": HOSTILE}))
    rows.append('{"epoch": 9, "train_lo')  # torn by a crash
    (run / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    summary = json.loads((run / "summary.json").read_text())
    summary.update({"dataset": HOSTILE, "best_epoch": HOSTILE, "total_seconds": HOSTILE})
    (run / "summary.json").write_text(json.dumps(summary))
    result = invoke("report", run, "--out", tmp_path / "out", "--data-dir",
                    trained_run.parent / "data")
    assert result.exit_code == 0, result.output
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<script" not in page.lower() and "<img src=x" not in page
    assert "&lt;script&gt;" in page and "onerror" in page  # there, as text
    assert "metrics.jsonl line 2 (not a metrics row; left out)" in page
    assert "metrics.jsonl line 5 (not a metrics row; left out)" in page


# --- nothing lost -------------------------------------------------------------------------------

def test_save_inputs_never_overwrites_an_input_or_an_earlier_output(checkpoint_path, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    digit = np.zeros((120, 90, 3), np.uint8) + 230
    digit[20:100, 40:52] = 20
    originals = {}
    for name in ("a.png", "b.png"):
        originals[name] = encoded(Image.fromarray(digit), "PNG")
        (photos / name).write_bytes(originals[name])
    result = invoke("predict", checkpoint_path, photos, "--save-inputs", photos)
    assert result.exit_code == 0, result.output
    for name, data in originals.items():
        assert (photos / name).read_bytes() == data  # the inputs are untouched
    assert sorted(p.name for p in photos.iterdir()) == ["a.png", "a~2.png", "b.png", "b~2.png"]
    assert Image.open(photos / "a~2.png").size == (28, 28)
    before = {p.name: p.read_bytes() for p in photos.iterdir()}
    result = invoke("predict", checkpoint_path, photos, "--save-inputs", photos)  # 4 inputs
    assert result.exit_code == 0, result.output
    after = {p.name: p.read_bytes() for p in photos.iterdir()}
    assert len(after) == 8 and all(after[name] == data for name, data in before.items())


def start_train(run_dir: Path, data_dir: Path, epochs: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mnist_bp", "train", "--data-dir", str(data_dir), "--run-dir",
         str(run_dir), "--set", "model.hidden=[256,256]", "--set", f"training.epochs={epochs}",
         "--quiet", "--no-report", "--set", "data.printed=false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_one_train_per_run_directory_and_a_killed_one_blocks_nothing(tmp_path, data_dir):
    run = tmp_path / "run"
    first = start_train(run, data_dir, 200)
    deadline = time.time() + 60
    while not (run / "checkpoints" / "last.npz").is_file():
        assert time.time() < deadline and first.poll() is None
        time.sleep(0.05)
    config = (run / "config.yaml").read_text()
    result = invoke("train", "--set", "data.printed=false",
                    "--data-dir", data_dir, "--run-dir", run, "--set",
                    "training.epochs=1")
    one_line_error(result, f"{run}: another mnist-bp train (process {first.pid}) is writing "
                           f"this run")
    assert (run / "config.yaml").read_text() == config  # the second wrote nothing
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    first.stderr.close()
    result = invoke("train", "--resume", run / "checkpoints" / "last.npz", "--data-dir",
                    data_dir, "--quiet", "--no-report")
    # the killed run's lock is gone with it: the resume runs (and is stopped here by
    # finishing; 200 epochs of a small net on 600 images)
    assert result.exit_code == 0, result.output
    assert json.loads((run / "summary.json").read_text())["epochs_run"] == 200


def test_a_mirror_sending_too_much_is_cut_off_and_the_next_tried(tmp_path):
    arrays = dataset_arrays(50, 20, seed=5)
    blobs = {role: gz_bytes(arrays[role]) for role in ROLES}
    with FileServer({FILENAMES[r]: b for r, b in blobs.items()}) as server:
        spec = spec_for("tiny", blobs, [server.url("endless"), server.url("good")])
        messages = []
        folder = download_dataset(spec, tmp_path, timeout=(2, 2), retries=0, backoff=0.01,
                                  show_progress=False, log=messages.append)
        for role in ROLES:
            assert (folder / FILENAMES[role]).read_bytes() == blobs[role]
        assert sum("sent more than the file's" in m for m in messages) == 4
        assert server.count("good") == 4
        assert not list(folder.glob("*.part"))


def test_a_damaged_study_file_is_one_line_and_left_as_it_is(tmp_path, data_dir):
    """SQLite writes each record in a transaction, so a worker killed mid-write tears
    nothing; a study file damaged some other way (a disk, a stray edit) is refused untouched."""
    pytest.importorskip("optuna")
    space = tmp_path / "space.yaml"
    space.write_text("optimizer.learning_rate: {low: 0.0005, high: 0.005, log: true}\n")
    out = tmp_path / "out"
    args = ["tune", "default", "--set", "data.printed=false",
            "--space", space, "--data-dir", data_dir, "--out", out,
            "--set", "data.validation=100", "--set", "training.epochs=1", "--set",
            "model.hidden=[16]"]
    assert invoke(*args, "--trials", 1).exit_code == 0
    study = out / "study.db"
    damaged = study.read_bytes()[:100] + b"\xff" * 4000 + study.read_bytes()[4100:]
    study.write_bytes(damaged)
    result = invoke(*args, "--trials", 2)
    one_line_error(result, "cannot read it as an SQLite database")
    assert study.read_bytes() == damaged


def test_idx_gzip_bomb_is_refused_while_decompressing(tmp_path):
    from mnist_bp.data import idx

    header = struct.pack(">HBBIII", 0, 8, 3, 600, 28, 28)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    body = compressor.compress(header)
    zeros = b"\0" * (1 << 20)
    for _ in range(400):  # 400 MB of zeros, about 400 KB compressed
        body += compressor.compress(zeros)
    body += compressor.flush()
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(body)
    with pytest.raises(idx.IdxError, match="decompresses to more than"):
        idx.read_images(path, "fix it")
    overflow = struct.pack(">HBBIII", 0, 8, 3, 2 ** 22, 2 ** 21, 2 ** 21)
    path.write_bytes(overflow)
    with pytest.raises(idx.IdxError, match="shorter than its header says"):
        idx.read_images(path, "fix it")


def test_checkpoint_size_limits_hold_for_a_real_large_member(tmp_path, monkeypatch):
    """The limit is on what the zip directory declares, so a forged one and a real one are
    refused alike (here with a smaller limit)."""
    monkeypatch.setattr(checkpoint, "MAX_ARRAY_BYTES", 1000)
    path = tmp_path / "c.npz"
    checkpoint.save(path, {"layers.0.W": np.zeros((40, 40), np.float32)}, {},
                    {"config": {}, "progress": {"epoch": 1},
                     "normalization": {"mean": 0.0, "std": 1.0, "per_image": False}})
    with pytest.raises(checkpoint.CheckpointError, match="not an array of a reasonable size"):
        checkpoint.load(path)
    assert os.path.getsize(path) > 1000


def test_a_new_run_never_replaces_an_earlier_one(tmp_path, data_dir):
    run = tmp_path / "run"
    common = ["--data-dir", data_dir, "--run-dir", run, "--set", "model.hidden=[16]", "--quiet",
              "--no-report"]
    assert invoke("train", *common, "--set", "training.epochs=1").exit_code == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    result = invoke("train", *common, "--set", "training.epochs=2")
    one_line_error(result, f"{run}: already holds a run", "--resume")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_fifos_and_folders_are_refused_not_read(tmp_path, checkpoint_path):
    """Reading a FIFO blocks until someone writes: given as a config, an image or an IDX
    file, it must be refused at once."""
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    start = time.monotonic()
    one_line_error(invoke("train", fifo, "--data-dir", tmp_path), "not a regular file")
    result = invoke("predict", checkpoint_path, fifo, "--json")
    assert result.exit_code == 1
    assert "not a regular file" in json.loads(result.stdout)["errors"][0]["error"]
    one_line_error(invoke("train", tmp_path, "--data-dir", tmp_path), "not a regular file")
    from mnist_bp.data import idx
    with pytest.raises(idx.IdxError, match="not a regular file"):
        idx.read_images(fifo, "fix")
    assert time.monotonic() - start < 10


def test_an_import_never_silently_replaces_other_data(tmp_path):
    from conftest import write_dataset

    good, other = dataset_arrays(60, 20, seed=1), dataset_arrays(60, 20, seed=2)
    write_dataset(tmp_path / "good", good)
    write_dataset(tmp_path / "other", other)
    data = tmp_path / "data"
    assert invoke("download", "--from", tmp_path / "good", "--data-dir", data).exit_code == 0
    before = {p.name: p.read_bytes() for p in (data / "mnist").glob("*.gz")}
    assert invoke("download", "--from", tmp_path / "good", "--data-dir", data).exit_code == 0
    one_line_error(invoke("download", "--from", tmp_path / "other", "--data-dir", data),
                   "already holds mnist files with other data; pass --force")
    assert {p.name: p.read_bytes() for p in (data / "mnist").glob("*.gz")} == before
    result = invoke("download", "--from", tmp_path / "other", "--data-dir", data, "--force")
    assert result.exit_code == 0
    assert {p.name: p.read_bytes() for p in (data / "mnist").glob("*.gz")} != before


def test_file_system_surprises_are_one_line(tmp_path, checkpoint_path, trained_run, data_dir):
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    one_line_error(invoke("train", "--set", "data.printed=false",
                          "--data-dir", data_dir, "--run-dir", blocker / "run",
                          "--set", "training.epochs=1"), str(blocker))
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255
    result = invoke("predict", checkpoint_path, "-", "--save-inputs", blocker, "--json",
                    input=encoded(Image.fromarray(digit), "PNG"))
    assert result.exit_code == 1  # the answer is printed first, then the one-line error
    assert len(json.loads(result.stdout)["predictions"]) == 1
    assert result.stderr.strip().splitlines() == [f"Error: {blocker}: File exists; check the path"]
    assert blocker.read_text() == "mine"
    long_name = tmp_path / ("d" * 240 + ".png")
    long_name.write_bytes(encoded(Image.fromarray(digit), "PNG"))
    result = invoke("predict", checkpoint_path, long_name, "--save-inputs", tmp_path / "seen")
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "seen").iterdir())) == 1


def test_tiles_sides_and_stdin_are_bounded(checkpoint_path):
    tiff = encoded(Image.new("L", (64, 64)), "TIFF")
    with pytest.raises(imageprep.ImageError, match="side longer than 20,000"):
        imageprep.read_image(png_declaring(1, 16_000_000), max_pixels=16_000_000)
    tiled = tiff_with_tiles(tiff, 65520, 32768)
    with pytest.raises(imageprep.ImageError, match="TIFF tiles of 65520x32768 pixels"):
        imageprep.read_image(tiled)
    result = invoke("predict", checkpoint_path, "-", "--json",
                    input=b"\x89PNG" + b"\0" * (imageprep.MAX_IMAGE_BYTES + 10))
    assert result.exit_code == 1
    assert "more than 200 MB" in json.loads(result.stdout)["errors"][0]["error"]


def tiff_with_tiles(tiff: bytes, tile_width: int, tile_length: int) -> bytes:
    """A little-endian TIFF with TileWidth/TileLength tags added (values only: a decoder
    would allocate a tile of that size before reading one)."""
    ifd = struct.unpack("<I", tiff[4:8])[0]
    count = struct.unpack("<H", tiff[ifd:ifd + 2])[0]
    entries = [tiff[ifd + 2 + 12 * k: ifd + 14 + 12 * k] for k in range(count)]
    entries += [struct.pack("<HHII", 322, 4, 1, tile_width),
                struct.pack("<HHII", 323, 4, 1, tile_length)]
    entries.sort(key=lambda e: struct.unpack("<H", e[:2])[0])
    body = struct.pack("<H", len(entries)) + b"".join(entries) + struct.pack("<I", 0)
    end = ifd + 2 + 12 * count + 4
    out = bytearray(tiff[:ifd]) + body + tiff[end:]
    return bytes(out)


def test_a_checkpoint_whose_outputs_overflow_answers_no_file(checkpoint_path, tmp_path):
    meta = meta_of(checkpoint_path)
    meta["normalization"] = {"mean": 0.0, "std": 1e-300, "per_image": False}
    one_line_error(invoke("evaluate", with_meta(checkpoint_path, tmp_path / "tiny-std.npz",
                                                meta)), "input normalisation")
    big = rewrite(checkpoint_path, tmp_path / "big.npz", {
        "layers.0.W.npy": npy_bytes(np.full(np.load(checkpoint_path)["layers.0.W"].shape, 1e9,
                                            np.float32))})
    one_line_error(invoke("evaluate", big), "holds values beyond")


# --- images made to be slow: decoded in a worker process with a time limit ---------------------

def slow_jpeg(side: int = 2000, scans: int = 2000) -> bytes:
    """A small progressive JPEG that takes seconds to decode: its last scan repeated `scans`
    times (a cost that grows with the scans, not the pixels; 44 kB for about 5 s here)."""
    im = Image.new("L", (side, side), 128)
    buf = io.BytesIO()
    im.save(buf, "JPEG", progressive=True, quality=90)
    data = buf.getvalue()
    i, segments = 2, []
    while data[i + 1] != 0xD9:
        marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
        j = i + 2 + length
        if marker == 0xDA:  # a scan: its entropy-coded data runs to the next marker
            while not (data[j] == 0xFF and data[j + 1] != 0 and not 0xD0 <= data[j + 1] <= 0xD7):
                j += 1
        segments.append((marker, data[i:j]))
        i = j
    head = b"".join(s for m, s in segments if m != 0xDA)
    scan_list = [s for m, s in segments if m == 0xDA]
    return b"\xff\xd8" + head + b"".join(scan_list) + scan_list[-1] * scans + b"\xff\xd9"


def plain_jpeg() -> bytes:
    """A digit as a JPEG: decoded by the workers (PNGs this small are decoded in-process)."""
    image = np.zeros((28, 28), np.uint8)
    image[6:22, 12:16] = 255
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def plain_png() -> bytes:
    image = np.zeros((28, 28), np.uint8)
    image[6:22, 12:16] = 255
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()


def test_an_image_slower_than_the_limit_is_killed_and_the_next_one_decodes():
    from mnist_bp.decoding import Decoders
    from mnist_bp.imageprep import ImageError

    decoders = Decoders(workers=1, seconds=1.0)
    try:
        start = time.monotonic()
        with pytest.raises(ImageError, match="took longer than 1 s to decode"):
            decoders.prepare(slow_jpeg())
        assert time.monotonic() - start < 4
        inputs = decoders.prepare(plain_jpeg(), "auto")  # a fresh worker took its place
        assert len(inputs) == 1 and inputs[0].image.shape == (28, 28)
        assert inputs[0].image.dtype == np.float32 and inputs[0].image.max() == 1.0
    finally:
        decoders.close()


def test_predict_names_the_slow_image_and_predicts_the_others(tmp_path, checkpoint_path,
                                                              monkeypatch):
    from mnist_bp import limits

    monkeypatch.setattr(limits, "DECODE_SECONDS", 1.0)
    (tmp_path / "slow.jpg").write_bytes(slow_jpeg())
    (tmp_path / "one.png").write_bytes(plain_png())
    start = time.monotonic()
    result = invoke("predict", checkpoint_path, tmp_path / "slow.jpg", tmp_path / "one.png",
                    "--json")
    assert time.monotonic() - start < 10
    assert result.exit_code == 1
    answer = json.loads(result.stdout)
    assert [p["file"] for p in answer["predictions"]] == [str(tmp_path / "one.png")]
    [error] = answer["errors"]
    assert error["file"] == str(tmp_path / "slow.jpg")
    assert error["error"].startswith("took longer than 1 s to decode and prepare")


def test_relative_paths_are_read_from_the_caller_s_folder(tmp_path, monkeypatch):
    """The decoding workers were started elsewhere: a relative path is the caller's."""
    from mnist_bp.decoding import shared

    shared().prepare(plain_jpeg())  # the pool is up, started from the current folder
    (tmp_path / "here.jpg").write_bytes(plain_jpeg())
    monkeypatch.chdir(tmp_path)
    assert shared().prepare("here.jpg")[0].image.shape == (28, 28)


# --- a second attacker's review of the boundaries -------------------------------------------

def test_a_lock_that_is_a_link_is_refused_and_its_target_untouched(tmp_path, data_dir):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    for kind in ("symlink", "hardlink"):
        run = tmp_path / kind
        run.mkdir()
        if kind == "symlink":
            (run / ".train.lock").symlink_to(notes)
        else:
            os.link(notes, run / ".train.lock")
        result = invoke("train", "--set", "data.printed=false",
                        "--data-dir", data_dir, "--run-dir", run, "--set",
                        "training.epochs=1", "--set", "model.hidden=[8]", "--no-report")
        assert result.exit_code == 1
        assert ".train.lock" in result.output and "Traceback" not in result.output
        assert notes.read_text() == "my notes"


def test_a_failed_train_in_a_report_folder_keeps_the_report(tmp_path, checkpoint_path):
    run = checkpoint_path.parent.parent
    out = tmp_path / "rep"
    assert invoke("report", run, "--out", out, "--data-dir", run.parent / "data").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = invoke("train", "--set", "data.printed=false",
                    "--data-dir", tmp_path / "nodata", "--run-dir", out, "--set",
                    "data.dataset=kmnist", env={"MNIST_BP_MIRROR": "http://127.0.0.1:9/"})
    assert result.exit_code == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_an_old_report_folder_adopts_only_what_it_wrote(tmp_path, checkpoint_path):
    run = checkpoint_path.parent.parent
    out = tmp_path / "rep"
    assert invoke("report", run, "--out", out, "--data-dir", run.parent / "data").exit_code == 0
    (out / ".mnist-bp-files.json").unlink()  # as an earlier mnist-bp left it
    (out / "mistakes.png").write_bytes(b"my picture")
    hour_ago = time.time() - 3600
    os.utime(out / "mistakes.png", (hour_ago, hour_ago))
    result = invoke("report", run, "--out", out, "--data-dir", run.parent / "data")
    assert result.exit_code == 1 and "mistakes.png: already exists" in result.output
    assert (out / "mistakes.png").read_bytes() == b"my picture"


def test_cache_and_data_files_that_are_not_files_never_hang(tmp_path):
    from mnist_bp.data.datadir import load_dataset

    arrays = dataset_arrays(60, 20)
    folder = write_dataset(tmp_path / "mnist", arrays)
    load_dataset("mnist", tmp_path, fetch=False)
    for name in ("manifest.json", "test_labels.npy"):  # a FIFO in the cache: rebuilt
        (folder / "cache" / name).unlink()
        os.mkfifo(folder / "cache" / name)
        start = time.monotonic()
        ds = load_dataset("mnist", tmp_path, fetch=False)
        assert time.monotonic() - start < 5
        assert np.array_equal(ds.test.labels, arrays["test_labels"])
    # an IDX file that is a FIFO is named, not taken for a missing file to download
    (folder / FILENAMES["test_images"]).unlink()
    os.mkfifo(folder / FILENAMES["test_images"])
    with pytest.raises(UserError, match="t10k-images-idx3-ubyte.gz: not a regular file"):
        load_dataset("mnist", tmp_path)


def test_a_huge_idx_file_is_refused_before_it_is_hashed(tmp_path):
    from mnist_bp.data.datadir import load_dataset

    arrays = dataset_arrays(60, 20)
    folder = write_dataset(tmp_path / "mnist", arrays)
    with open(folder / FILENAMES["train_images"], "r+b") as f:
        f.truncate(8 << 30)  # 8 GB, sparse
    start = time.monotonic()
    with pytest.raises(UserError, match="bytes is more than the"):
        load_dataset("mnist", tmp_path, fetch=False)
    assert time.monotonic() - start < 5


def test_an_idx_file_rewritten_since_the_cache_is_said(tmp_path):
    from mnist_bp.data.cache import load_cached

    arrays = dataset_arrays(60, 20)
    folder = write_dataset(tmp_path / "mnist", arrays)
    load_cached(folder)
    other = dataset_arrays(60, 20, seed=5)
    time.sleep(0.01)
    (folder / FILENAMES["test_labels"]).write_bytes(gz_bytes(other["test_labels"]))
    said = []
    ds = load_cached(folder, log=said.append)
    assert np.array_equal(ds.test.labels, other["test_labels"])
    assert any("other bytes than when the cache was built" in m for m in said), said


def test_a_script_without_a_main_guard_runs_once(tmp_path, checkpoint_path):
    """The decoding workers never run the caller's script again."""
    (tmp_path / "one.jpg").write_bytes(plain_jpeg())  # a JPEG: decoded by a worker
    script = tmp_path / "script.py"
    script.write_text("import mnist_bp\nprint('body')\n"
                      f"model = mnist_bp.load({str(checkpoint_path)!r})\n"
                      "print(model.predict(['one.jpg'])[0].digit)\n")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split()
    assert lines[0] == "body" and lines.count("body") == 1 and lines[1].isdigit()
    assert "Traceback" not in done.stderr


def test_only_small_pngs_gifs_and_bmps_skip_the_workers():
    from mnist_bp.decoding import linear_and_small
    from mnist_bp.limits import FAST_DECODE_BYTES

    def encoded(fmt, side):
        buf = io.BytesIO()
        Image.new("L", (side, side), 0).save(buf, fmt)
        return buf.getvalue()

    assert all(linear_and_small(encoded(f, 280)) for f in ("PNG", "GIF", "BMP"))
    assert not any(linear_and_small(encoded(f, 280)) for f in ("JPEG", "TIFF", "WEBP"))
    assert not linear_and_small(encoded("PNG", 1001))  # over a megapixel: a worker
    assert not linear_and_small(b"\x89PNG\r\n\x1a\n" + b"\0" * 24)  # no IHDR where it belongs
    # a file of many tiny chunks (or comment blocks) costs per byte: past 512 kB, a worker
    chunky = encoded("PNG", 28)
    chunky = chunky[:33] + (struct.pack(">I", 0) + b"abCd" + b"\0" * 4) * 50_000 + chunky[33:]
    assert len(chunky) > FAST_DECODE_BYTES and not linear_and_small(chunky)


def test_a_gif_whose_frame_grows_the_canvas_goes_to_a_worker():
    # the header says 1x1; the first frame, placed at (1999, 1999), makes Pillow open it
    # as 2000x2000: 4 megapixels, too many to decode without a worker's limits
    from mnist_bp.decoding import Decoders, linear_and_small, prepare_here

    buf = io.BytesIO()
    Image.new("P", (1, 1), 0).save(buf, "GIF")
    gif = bytearray(buf.getvalue())
    at = gif.index(b",")  # the image descriptor
    gif[at + 1:at + 5] = struct.pack("<HH", 1999, 1999)
    gif = bytes(gif)
    assert linear_and_small(gif)  # from its header
    assert prepare_here(gif, "auto", False) is None  # refused here once opened
    decoders = Decoders(workers=1, seconds=5.0)
    try:  # a worker reads it: one colour, so blank
        with pytest.raises(imageprep.ImageError, match="blank image"):
            decoders.prepare(gif)
        assert decoders.started == 1
    finally:
        decoders.close()


def test_a_row_of_digits_is_always_prepared_by_a_worker(tmp_path, monkeypatch):
    # a small PNG of one digit is prepared in the calling process; a row of digits costs by
    # its marks and cuts, not its pixels (a 250-byte PNG of ten heavy blocks with holes
    # in a grid makes hundreds of pieces), so it goes to a worker with a time limit
    from mnist_bp import decoding

    page = np.full((60, 300), 255, np.uint8)
    page[10:50, 20:60] = page[10:50, 100:140] = 0
    png = encoded(Image.fromarray(page), "PNG")
    (tmp_path / "row.png").write_bytes(png)
    here = []
    prepare_here = decoding.prepare_here
    monkeypatch.setattr(decoding, "prepare_here", lambda *a, **k: here.append(a[2]) or
                        prepare_here(*a, **k))
    decoders = decoding.Decoders(workers=1, seconds=5.0)
    try:
        assert len(decoders.prepare(png, number=True)) == 2 and decoders.started == 1
        assert len(decoders.prepare(tmp_path / "row.png", number=True)) == 2
        assert here == []
        decoders.prepare(png)  # one digit: here
        assert here == [False] and decoders.started == 1
    finally:
        decoders.close()


def test_predict_sends_each_row_of_digits_to_a_worker(checkpoint_path, tmp_path, monkeypatch):
    from mnist_bp import decoding
    from mnist_bp.model import load

    page = np.full((60, 300), 255, np.uint8)
    page[10:50, 20:60] = page[10:50, 100:140] = 0
    (tmp_path / "row.png").write_bytes(encoded(Image.fromarray(page), "PNG"))
    here = []
    prepare_here = decoding.prepare_here
    monkeypatch.setattr(decoding, "prepare_here", lambda *a, **k: here.append(a[2]) or
                        prepare_here(*a, **k))
    model = load(checkpoint_path)
    [row] = model.predict_paths([tmp_path / "row.png"], number=True)
    assert len(row.digits) == 2 and here == []
    [digit] = model.predict_paths([tmp_path / "row.png"])
    assert digit.ok and here == [False]


def test_a_workers_answer_that_does_not_add_up_is_refused():
    from mnist_bp.decoding import _answer

    side = 28 * 28 * 4
    image = np.full((28, 28), 0.5, "<f4").tobytes()

    def answer(offered, images):
        return _answer({"inputs": [[True, False, offered]]}, memoryview(image * images))

    shapes, ways, clean = [[0.4, 0.9], [0.3, 0.9]], [[0, 1, -1]], [True]
    [part] = answer([shapes, ways, clean], 3)
    assert part.cuts.images.shape == (2, 28, 28) and part.cuts.ways.tolist() == ways
    assert part.cuts.clean.tolist() == [True] and part.inverted and not part.light_background
    assert answer(None, 1)[0].cuts is None
    for offered, images in (([shapes, ways, clean], 2),           # a piece missing
                            ([shapes, ways, clean], 4),           # an image no input has
                            ([shapes, [[0, 2, -1]], clean], 3),   # a piece out of range
                            ([shapes, [[0, -2, -1]], clean], 3),
                            ([shapes, [[-1, 1, -1]], clean], 3),  # a cut of one piece
                            ([shapes, ways, [True, False]], 3),
                            ([[], [], []], 1),
                            ([shapes, "ways", clean], 3)):
        with pytest.raises((ValueError, TypeError, KeyError, IndexError)):
            answer(offered, images)
    with pytest.raises(ValueError, match="partial"):
        _answer({"inputs": []}, memoryview(image[:side - 4]))


@pytest.mark.parametrize("answer", [
    b"\x00\x00\x00\x05{not json",
    b"\x00\x00\x00\x05\"str\"",
    b"\x00\x10\x00\x00" + b"[" * 200_000,  # nesting deeper than JSON's recursion limit
    "ways",  # a piece index too large for an integer array
])
def test_a_workers_answer_that_does_not_parse_ends_that_worker(answer):
    from mnist_bp import decoding

    if answer == "ways":
        answer = decoding._message(
            {"inputs": [[True, False, [[[0.4, 0.9]], [[10**30, 0, -1]], [True]]]]},
            np.zeros((2, 28, 28), "<f4").tobytes())

    class Conn:
        def send_bytes(self, data):
            pass

        def poll(self, seconds):
            return True

        def recv_bytes(self):
            return answer

    worker, replaced = type("Worker", (), {"conn": Conn()})(), []
    decoders = decoding.Decoders(workers=1, seconds=5.0)
    decoders._get = lambda: worker
    decoders._replace = replaced.append
    with pytest.raises(imageprep.ImageError, match="^its decoder gave an answer that does not "
                                                    "add up; save it again as a plain PNG"):
        decoders.prepare(b"not small: no PNG header", number=True)
    assert replaced == [worker] and decoders.idle.empty()
