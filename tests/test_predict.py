"""`mnist-bp predict`: preprocessing numbers, image formats, bad inputs, threads, the CLI."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

from conftest import dataset_arrays, reference_probabilities
from mnist_bp import imageprep as P
from mnist_bp.cli import main
from mnist_bp.model import load
from mnist_bp.predict import expand_inputs


def png_bytes(array_u8: np.ndarray, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array_u8, mode).save(buf, "PNG")
    return buf.getvalue()


def blob_page(h=300, w=240, box=(60, 90, 180, 150), paper=230, ink=30) -> np.ndarray:
    """Dark rectangle-ish blob (rows y0..y1, cols x0..x1) on light paper, uint8."""
    page = np.full((h, w), paper, np.uint8)
    y0, x0, y1, x1 = box
    page[y0:y1, x0:x1] = ink
    return page


def digit_stroke_image(size=(300, 220), paper=(235, 225, 200), ink=(20, 20, 80)) -> Image.Image:
    """An RGB page with a hand-drawn-like '7' of thick strokes."""
    im = Image.new("RGB", size, paper)
    d = ImageDraw.Draw(im)
    d.line([(60, 70), (170, 70), (100, 240)], fill=ink, width=14)
    return im


# --- preprocessing ---------------------------------------------------------------------------

def test_blob_is_centred_with_longest_side_20():
    gray = blob_page().astype(np.float32) / 255  # blob 120 tall, 60 wide
    out = P.prepare(gray).image
    rows = np.flatnonzero(out.max(axis=1) > 0.05)
    cols = np.flatnonzero(out.max(axis=0) > 0.5)
    # 20 pixels tall, at a fractional offset: the end rows are partly covered
    assert rows[-1] - rows[0] + 1 in (20, 21)
    assert out.max(axis=1).sum() == pytest.approx(20, abs=0.5)
    # a solid blob half as wide as tall is a very heavy stroke: redrawn at MNIST's width
    # (9 % of the 20-pixel box, anti-aliased), no longer 10 pixels wide
    assert 3 <= cols[-1] - cols[0] + 1 <= 5
    cy, cx = P.centre_of_mass(out)
    assert abs(cy - 14) <= 0.05 and abs(cx - 14) <= 0.05
    assert out.max() == pytest.approx(1.0)
    assert out[0].max() == 0 and out[:, 0].max() == 0  # background is 0


def test_auto_gives_the_same_input_for_an_image_and_its_inversion():
    im = np.asarray(digit_stroke_image().convert("L"), np.float32) / 255
    a = P.prepare(im, "auto")
    b = P.prepare(1 - im, "auto")
    assert a.light_background and not b.light_background
    assert a.inverted and not b.inverted
    np.testing.assert_allclose(a.image, b.image, atol=1e-5)


def test_invert_no_keeps_the_polarity_and_yes_flips_it():
    im = np.asarray(digit_stroke_image().convert("L"), np.float32) / 255  # dark on light
    auto, no, yes = (P.prepare(im, mode) for mode in ("auto", "no", "yes"))
    np.testing.assert_allclose(no.image, 1 - auto.image, atol=1e-6)
    np.testing.assert_allclose(yes.image, auto.image, atol=1e-6)
    assert (no.inverted, yes.inverted) == (False, True)
    light_on_dark = P.prepare(1 - im, "yes")
    np.testing.assert_allclose(light_on_dark.image, 1 - auto.image, atol=1e-5)


def test_mnist_like_image_comes_through_unchanged(small_arrays):
    for image in small_arrays["test_images"][:20]:
        gray = image.astype(np.float32) / 255
        out = P.prepare(gray).image
        # synthetic digits sit in a 20x20 box at the centre, like MNIST's
        np.testing.assert_array_equal(out, gray)


def test_shadow_and_tint_do_not_count_as_ink():
    page = blob_page(paper=220).astype(np.float32)
    ramp = np.linspace(0.55, 1.0, page.shape[1])[None, :]  # a shadow across the page
    shaded = page * ramp * np.array([1.0]) / 255
    clean = P.prepare(blob_page(paper=220).astype(np.float32) / 255).image
    out = P.prepare(shaded.astype(np.float32)).image
    assert np.abs(out - clean).max() < 0.1


def test_stray_specks_are_dropped():
    page = blob_page()
    page[5:8, 5:8] = 30  # a speck in the corner, far from the digit
    out = P.prepare(page.astype(np.float32) / 255).image
    clean = P.prepare(blob_page().astype(np.float32) / 255).image
    np.testing.assert_allclose(out, clean, atol=1e-6)


def test_number_is_split_into_digits_left_to_right():
    page = np.full((120, 400), 240, np.uint8)
    page[20:100, 30:50] = 20     # a "1"-like bar
    page[20:100, 150:200] = 20   # a ring (a "0" of 15-pixel strokes)
    page[35:85, 165:185] = 240
    page[20:40, 300:360] = 20    # a detached top stroke of the third digit...
    page[50:100, 320:340] = 20   # ...and its stem, below it
    parts = P.prepare_number(page.astype(np.float32) / 255)
    assert len(parts) == 3
    widths = [np.flatnonzero(p.image.max(axis=0) > 0.5).size for p in parts]
    assert widths[0] < widths[1]  # thin bar first, ring second


def test_blank_page_is_an_error():
    with pytest.raises(P.ImageError, match="blank image"):
        P.prepare(np.full((100, 100), 0.8, np.float32))
    noisy = np.random.default_rng(0).normal(0.8, 0.01, (100, 100)).astype(np.float32)
    with pytest.raises(P.ImageError, match="blank image"):
        P.prepare(noisy)


# --- reading images --------------------------------------------------------------------------

def test_rgba_on_transparency_reads_as_ink(tmp_path):
    rgba = np.zeros((200, 200, 4), np.uint8)
    rgba[40:160, 90:110] = (0, 0, 0, 255)  # black stroke; the rest fully transparent black
    path = tmp_path / "t.png"
    Image.fromarray(rgba, "RGBA").save(path)
    gray = P.read_image(path)
    assert gray[100, 100] == pytest.approx(0.0) and gray[10, 10] == pytest.approx(1.0)
    assert P.prepare(gray).light_background


def test_exif_rotated_jpeg_is_turned_upright(tmp_path):
    upright = np.full((200, 100), 255, np.uint8)
    upright[20:60, 20:80] = 0  # ink at the top
    stored = np.rot90(upright, k=1)  # stored sideways (ink on the left)...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...and tagged "rotate 90 CW to display"
    path = tmp_path / "r.jpg"
    Image.fromarray(np.ascontiguousarray(stored)).save(path, exif=exif, quality=95)
    gray = P.read_image(path)
    assert gray.shape == (200, 100)
    assert gray[:100].mean() < gray[100:].mean()  # the ink is at the top again


def test_16_bit_png_keeps_its_range(tmp_path):
    a = np.full((60, 60), 60000, np.uint16)
    a[20:40, 25:35] = 3000
    path = tmp_path / "deep.png"
    Image.fromarray(a).save(path)
    gray = P.read_image(path)
    assert gray[0, 0] == pytest.approx(60000 / 65535, abs=1e-4)
    assert gray[30, 30] == pytest.approx(3000 / 65535, abs=1e-4)


@pytest.mark.parametrize("content, message", [
    (b"not an image at all", "not a PNG, JPEG, GIF, BMP, TIFF or WebP image"),
    (png_bytes(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8))[:2000],
     "truncated or corrupt"),
])
def test_bad_files_raise_one_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(P.ImageError, match=message):
        P.read_image(path)


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "MAX_PIXELS", 10_000)
    path = tmp_path / "big.png"
    Image.new("L", (200, 200), 255).save(path)
    with pytest.raises(P.ImageError, match="decompression bomb"):
        P.read_image(path)


# --- the predictor and the command -----------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(trained_run):
    return trained_run / "checkpoints" / "best.npz"


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    """The synthetic test images as PNG files, named by index."""
    arrays = dataset_arrays()
    folder = tmp_path_factory.mktemp("pngs")
    for i, image in enumerate(arrays["test_images"][:60]):
        (folder / f"{i:03d}.png").write_bytes(png_bytes(image))
    return folder, arrays["test_images"][:60], arrays["test_labels"][:60]


def test_png_round_trip_matches_evaluation(checkpoint, exported):
    folder, images, labels = exported
    predictor = load(checkpoint)
    direct = predictor.probabilities(images.astype(np.float32) / 255)
    results = predictor.predict_paths(sorted(folder.iterdir()))
    got = np.array([r["probabilities"] for r in results])
    np.testing.assert_allclose(got, direct, rtol=1e-6, atol=1e-9)
    assert [r["digit"] for r in results] == list(direct.argmax(axis=1))
    # evaluation's own path (uint8 through the batch maker) gives the same outputs
    from mnist_bp.nn.losses import make_loss
    from mnist_bp.scoring import evaluate
    scored = evaluate(predictor.network, make_loss(predictor.cfg.loss),
                      predictor.maker(images, labels), keep_outputs=True)
    assert np.array_equal(np.array([r["digit"] for r in results]),
                          scored["outputs"].argmax(axis=1))
    np.testing.assert_allclose(got, reference_probabilities(checkpoint, images), atol=1e-5)
    assert np.mean(direct.argmax(axis=1) == labels) > 0.9
    assert all(r["inverted"] is False for r in results)


def test_threads_get_the_same_answers(checkpoint, exported):
    folder, _, _ = exported
    predictor = load(checkpoint)
    files = sorted(folder.iterdir())
    alone = [predictor.predict_image(f)["probabilities"] for f in files]
    got: dict[int, list] = {}

    def work(k):
        for i in range(k % 5, len(files), 5):
            got[i] = predictor.predict_image(files[i])["probabilities"]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[i] for i in range(len(files))] == alone


def test_cli_json_with_errors_and_saved_inputs(checkpoint, exported, tmp_path):
    folder, _, _ = exported
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"<html>not a png</html>")
    blank = tmp_path / "blank.png"
    blank.write_bytes(png_bytes(np.full((50, 50), 200, np.uint8)))
    seen = tmp_path / "seen"
    result = CliRunner().invoke(main, ["predict", str(checkpoint), str(folder / "000.png"),
                                       str(bad), str(blank), str(tmp_path / "missing.png"),
                                       "--json", "--save-inputs", str(seen)])
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert out["checkpoint"] == str(checkpoint)
    assert [p["file"] for p in out["predictions"]] == [str(folder / "000.png")]
    p = out["predictions"][0]
    assert set(p) >= {"file", "digit", "confidence", "probabilities", "inverted"}
    assert len(p["probabilities"]) == 10 and sum(p["probabilities"]) == pytest.approx(1)
    assert p["confidence"] == max(p["probabilities"])
    errors = {Path(e["file"]).name: e["error"] for e in out["errors"]}
    assert set(errors) == {"bad.png", "blank.png", "missing.png"}
    assert errors["bad.png"] == "not a PNG, JPEG, GIF, BMP, TIFF or WebP image"
    assert "blank image" in errors["blank.png"]
    assert "cannot read" in errors["missing.png"]
    assert "Traceback" not in result.output
    saved = np.asarray(Image.open(seen / "000.png"))
    assert saved.shape == (28, 28)
    # an MNIST-like 28x28 input keeps its pixels: what was saved is the exported image
    assert np.array_equal(saved, np.asarray(Image.open(folder / "000.png")))


def test_cli_table_directory_and_stdin(checkpoint, exported):
    folder, _, _ = exported
    data = (folder / "001.png").read_bytes()
    result = CliRunner().invoke(main, ["predict", str(checkpoint), str(folder), "-", "--top", "2"],
                                input=data)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["file", "digit", "confidence"]
    assert len(lines) == 1 + 60 + 1
    assert lines[1].startswith(str(folder / "000.png"))
    assert lines[-1].startswith("-")
    assert lines[-1].split()[1] == lines[2].split()[1]  # stdin is 001.png again


def test_cli_number_table_keeps_its_columns_apart(checkpoint, tmp_path):
    # a number's top 3 lists each digit's: 3 digits take 82 characters, wider than the 36 the
    # header's column has; the inverted column ran into it ("... 2:0.000yes")
    page = np.full((120, 236), 245, np.uint8)
    for left in (20, 100, 180):
        page[20:100, left:left + 12] = 20
    path = tmp_path / "number.png"
    path.write_bytes(png_bytes(page))
    result = CliRunner().invoke(main, ["predict", str(checkpoint), str(path), "--number"])
    assert result.exit_code == 0, result.output
    head, row = result.stdout.strip().splitlines()
    column = head.index("inverted")
    assert row[column:] == "yes" and row[column - 2:column] == "  "
    assert len(row.split()[1]) == 3  # three bars, three digits
    assert head.index("confidence") == row.index(row.split()[2])


def test_cli_number(checkpoint, tmp_path):
    """Three strokes side by side, one with a detached piece above it, are three digits."""
    page = np.full((120, 236), 245, np.uint8)  # small enough to be analysed at full size
    page[20:100, 20:32] = 20     # a bar
    page[20:100, 80:125] = 20    # a block
    page[20:32, 160:210] = 20    # a detached top stroke...
    page[45:100, 178:190] = 20   # ...over its stem
    path = tmp_path / "number.png"
    path.write_bytes(png_bytes(page))
    result = CliRunner().invoke(main, ["predict", str(checkpoint), str(path), "--number",
                                       "--json"])
    assert result.exit_code == 0, result.output
    pred = json.loads(result.stdout)["predictions"][0]
    assert len(pred["digits"]) == 3 and pred["inverted"] is True
    assert pred["number"] == "".join(str(d["digit"]) for d in pred["digits"])
    for d in pred["digits"]:
        assert d["confidence"] == max(d["probabilities"])
    alone = load(checkpoint).predict_image(page[:, :60].astype(np.float32) / 255)
    assert pred["digits"][0]["probabilities"] == pytest.approx(alone["probabilities"])


def test_missing_checkpoint_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "none.npz"), "x.png"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: {tmp_path / 'none.npz'}: checkpoint not found; pass a checkpoint written by "
        "`mnist-bp train` (RUN/checkpoints/last.npz or best.npz)"]


def test_expand_inputs_sorts_a_directory(tmp_path):
    for name in ("b.png", "a.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [n for n, _ in expand_inputs([str(tmp_path)])] == [str(tmp_path / "a.jpg"),
                                                              str(tmp_path / "b.png")]


def test_one_prediction_type_for_predict_serve_and_the_api(checkpoint, tmp_path):
    """predict's JSON, the Python API (arrays and paths) and serve's answer are made by one
    function (prediction.predictions): the same fields, with the same values, per mode."""
    import json as json_module

    from click.testing import CliRunner

    from mnist_bp.cli import main
    from mnist_bp.prediction import Prediction
    from mnist_bp.serve import predict_bytes

    model = load(checkpoint)
    image = dataset_arrays()["test_images"][3]
    path = tmp_path / "d.png"
    Image.fromarray(image).save(path)
    [from_path] = model.predict([path])
    [from_array] = model.predict(image.astype(np.float32) / 255)
    assert isinstance(from_path, Prediction) and isinstance(from_array, Prediction)
    assert sorted(from_array) == ["confidence", "digit", "probabilities"]
    assert sorted(from_path) == ["confidence", "digit", "file", "inverted", "probabilities"]
    assert from_path.digit == from_path["digit"] and from_path.input.shape == (28, 28)
    cli = json_module.loads(CliRunner().invoke(main, ["predict", str(checkpoint), str(path),
                                                      "--json"]).stdout)
    [shown] = cli["predictions"]
    assert {k: v for k, v in shown.items() if k != "top"} == dict(from_path)
    [served] = predict_bytes({"m": model}, path.read_bytes(), "auto")["predictions"]
    assert {k: served[k] for k in from_path if k != "file"} == \
        {k: v for k, v in from_path.items() if k != "file"}
    [number] = model.predict_paths([path], number=True)
    assert sorted(number) == ["digits", "file", "inverted", "number"]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"junk")
    [failed] = model.predict([bad])
    assert sorted(failed) == ["error", "file"] and not failed.ok


@pytest.mark.parametrize("sure", [0.0, 1.01])
def test_the_network_judges_whether_a_heavy_part_is_two_digits(checkpoint, tmp_path,
                                                               monkeypatch, sure):
    """A heavy ring as wide as a digit comes offered cut into digits; whether it is read as two
    digits is the network's call (`prediction.judged`), in every path: a JPEG prepared by a
    decoding worker, a PNG prepared in this process, an array. Here the network is made
    always sure enough (0) or never (1.01)."""
    from mnist_bp import prediction

    monkeypatch.setattr(prediction, "SPLIT_SURE", sure)
    monkeypatch.setattr(prediction, "SPLIT_MARGIN", -1.0)
    monkeypatch.setattr(prediction, "SPLIT_FAIR", 1.01)
    page = np.full((120, 236), 245, np.uint8)
    page[20:100, 80:150] = 20  # a pen 14 pixels wide, 0.18 of the height
    page[34:86, 94:136] = 245
    Image.fromarray(page).save(tmp_path / "block.jpg", quality=95)
    (tmp_path / "block.png").write_bytes(png_bytes(page))
    result = CliRunner().invoke(main, ["predict", str(checkpoint), str(tmp_path / "block.jpg"),
                                       str(tmp_path / "block.png"), "--number", "--json",
                                       "--save-inputs", str(tmp_path / "seen")])
    assert result.exit_code == 0, result.output
    want = 2 if sure == 0 else 1
    assert [len(p["digits"]) for p in json.loads(result.stdout)["predictions"]] == [want] * 2
    assert len(list((tmp_path / "seen").iterdir())) == 2 * want
    [whole] = P.prepare_number(page.astype(np.float32) / 255)
    read = load(checkpoint).predict_image(page.astype(np.float32) / 255, number=True)
    assert len(read["digits"]) == want
    if want == 2:  # the network read the pieces of one of the cuts into two offered
        cuts = whole.cuts
        assert any(np.array_equal(np.stack(read.inputs), cuts.images[way[:2]])
                   for way in cuts.ways if way[2] < 0)
