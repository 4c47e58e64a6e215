"""`mnist-bp serve`: the API over real HTTP, its limits, concurrency, a clean stop, and the
page in a real browser (Debian's chromium and chromium-driver; skipped without them)."""

from __future__ import annotations

import base64
import io
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from conftest import dataset_arrays, reference_probabilities, train_small
from mnist_bp.imageprep import prepare, read_image
from mnist_bp.model import load
from mnist_bp.serve import MAX_BODY, model_names

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-10k"


def png(array_u8: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array_u8).save(buf, "PNG")
    return buf.getvalue()


class Server:
    """`mnist-bp serve` in a subprocess on a free port, as a user starts it."""

    def __init__(self, *checkpoints):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mnist_bp", "serve", *map(str, checkpoints), "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()  # printed once it accepts connections
        assert line.startswith("serving on http://127.0.0.1:"), line + self.proc.stderr.read()
        self.url = line.removeprefix("serving on ")

    def post(self, body: bytes, **params):
        return requests.post(f"{self.url}/api/predict", data=body, params=params, timeout=30)

    def healthy(self) -> bool:
        return requests.get(f"{self.url}/healthz", timeout=10).json() == {"status": "ok"}

    def stop(self, sig=signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=20)
        self.rest = self.proc.stdout.read()
        self.log = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return code


@pytest.fixture(scope="module")
def checkpoint(trained_run):
    return trained_run / "checkpoints" / "best.npz"


@pytest.fixture(scope="module")
def server(checkpoint):
    s = Server(checkpoint, checkpoint)  # the same run twice: two names
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def digits():
    arrays = dataset_arrays(n_train=10, n_test=200, seed=3)
    return [png(255 - im) for im in arrays["test_images"]]  # dark on light, like paper


def test_health_and_models(server, checkpoint):
    assert server.healthy()
    models = requests.get(f"{server.url}/api/models", timeout=10).json()["models"]
    name = checkpoint.parent.parent.name
    assert [m["name"] for m in models] == [name, f"{name}-2"]
    assert all(m["checkpoint"] == checkpoint.name and "/" not in m["checkpoint"]
               for m in models)


def test_page_holds_the_canvas_and_loads_nothing_from_elsewhere(server):
    r = requests.get(server.url + "/", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert '<canvas id="pad"' in r.text
    assert "http://" not in r.text and "https://" not in r.text


def test_predict_matches_the_predictor(server, checkpoint, digits):
    predictor = load(checkpoint)
    for invert in ("auto", "no", "yes"):
        r = server.post(digits[0], invert=invert)
        assert r.status_code == 200
        answers = r.json()["predictions"]
        assert [a["model"] for a in answers] == [checkpoint.parent.parent.name,
                                                 f"{checkpoint.parent.parent.name}-2"]
        prepared = prepare(read_image(digits[0]), invert)
        expected = predictor.probabilities(prepared.image[None])[0]
        for a in answers:
            assert a["probabilities"] == pytest.approx(expected.tolist(), abs=1e-12)
            assert a["digit"] == int(expected.argmax())
            assert a["confidence"] == pytest.approx(expected.max())
            assert a["inverted"] is (invert != "no")
            assert np.array(a["input"]).shape == (28, 28)
            assert np.array_equal(np.array(a["input"]), np.round(prepared.image, 3))
        # and the probabilities of an independent forward pass over that input
        reference = reference_probabilities(checkpoint, prepared.image[None])[0]
        assert answers[0]["probabilities"] == pytest.approx(reference.tolist(), abs=1e-5)


def test_explain_answers_each_model_with_the_api_s_attribution(server, checkpoint, digits):
    model = load(checkpoint)
    for invert in ("auto", "no"):
        r = requests.post(f"{server.url}/api/explain", data=digits[0], params={"invert": invert},
                          timeout=30)
        assert r.status_code == 200
        answers = r.json()["explanations"]
        name = checkpoint.parent.parent.name
        assert [a["model"] for a in answers] == [name, f"{name}-2"]
        prepared = prepare(read_image(digits[0]), invert)
        expected = model.explain(prepared.image)[0]
        digit = int(model.probabilities(prepared.image[None])[0].argmax())
        for a in answers:
            assert a["digit"] == a["target"] == digit
            attribution = np.array(a["attribution"])
            assert attribution.shape == (28, 28)
            assert np.allclose(attribution, expected, rtol=1e-3, atol=1e-7)
    bad = requests.post(f"{server.url}/api/explain", data=b"junk", timeout=30)
    assert bad.status_code == 400 and "error" in bad.json()
    assert requests.post(f"{server.url}/api/explain", data=digits[0], params={"invert": "x"},
                         timeout=30).status_code == 400


def test_default_invert_is_auto(server, digits):
    assert server.post(digits[1]).json() == server.post(digits[1], invert="auto").json()


def big_blank_png(side: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (side, side), 255).save(buf, "PNG", optimize=True)
    return buf.getvalue()


@pytest.mark.parametrize("body, params, status, message", [
    (b"<html>this is not an image</html>", {}, 400,
     "not a PNG, JPEG, GIF, BMP, TIFF or WebP image"),
    (png(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8))[:2000], {}, 400,
     "truncated or corrupt"),
    (png(np.full((64, 64), 200, np.uint8)), {}, 400, "blank image"),
    (big_blank_png(5000), {}, 400, "decompression bomb"),  # 25 MP in a small file
    (b"", {}, 400, "empty body"),
    (png(np.zeros((8, 8), np.uint8)), {"invert": "maybe"}, 400, "invert must be one of"),
    (b"\0" * (MAX_BODY + 1), {}, 413, "over the"),
])
def test_bad_requests_get_json_errors_and_the_server_goes_on(server, digits, body, params,
                                                             status, message):
    r = server.post(body, **params)
    assert r.status_code == status
    assert message in r.json()["error"]
    assert server.healthy()
    assert server.post(digits[0]).status_code == 200


def test_body_over_the_limit_without_content_length_is_413(server):
    def chunks():  # chunked transfer: the server must count as it reads
        for _ in range(MAX_BODY // 65536 + 2):
            yield b"\0" * 65536

    r = requests.post(f"{server.url}/api/predict", data=chunks(), timeout=30)
    assert r.status_code == 413 and server.healthy()


def test_concurrent_requests_never_mix(server, digits):
    alone = {i: server.post(digits[i]).json() for i in range(len(digits))}
    order = [i % len(digits) for i in range(200)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: (i, server.post(digits[i]).json()), order))
    assert all(answer == alone[i] for i, answer in answers)
    assert len({str(alone[i]["predictions"][0]["input"]) for i in alone}) > 100


def test_sigint_and_sigterm_stop_cleanly(checkpoint):
    for sig in (signal.SIGINT, signal.SIGTERM):
        s = Server(checkpoint)
        assert s.healthy()
        assert s.stop(sig) == 0
        with pytest.raises(requests.ConnectionError):  # the port is closed
            requests.get(f"{s.url}/healthz", timeout=5)


def test_missing_checkpoint_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mnist_bp", "serve", str(tmp_path / "x.npz"),
                        "--port", "0"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"Error: {tmp_path / 'x.npz'}: checkpoint not found; pass a checkpoint written by "
        "`mnist-bp train` (RUN/checkpoints/last.npz or best.npz)"]


def test_model_names_are_unique():
    assert model_names([Path("a/r1/checkpoints/best.npz"), Path("b/r1/checkpoints/last.npz"),
                        Path("c/my.npz")]) == ["r1", "r1-2", "my"]


# --- in a real browser -------------------------------------------------------------------------

def browser():
    """A headless Chromium driven by Selenium, or skip saying what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed")
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("browser tests need Debian's chromium and chromium-driver "
                    "(apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1200,900",
                 f"--user-data-dir={tempfile.mkdtemp(prefix='mnist-bp-chrome-')}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver_path), options=options)


def wait_for(check, timeout=20.0):
    end = time.time() + timeout
    while time.time() < end:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting in the browser")


def draw(driver, points):
    """Drag the mouse through `points` (canvas pixels) on the drawing canvas."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    pad = driver.find_element(By.ID, "pad")
    size = pad.size
    actions = ActionChains(driver, duration=20)
    x0, y0 = points[0]
    actions.move_to_element_with_offset(pad, x0 - size["width"] / 2, y0 - size["height"] / 2)
    actions.click_and_hold()
    for (xa, ya), (xb, yb) in zip(points, points[1:], strict=False):
        actions.move_by_offset(xb - xa, yb - ya)
    actions.release().perform()


def shown(driver) -> dict:
    from selenium.webdriver.common.by import By

    return {card.get_attribute("data-model"): card.find_element(By.CLASS_NAME, "digit").text
            for card in driver.find_elements(By.CLASS_NAME, "model")}


def canvas_png(driver) -> bytes:
    data = driver.execute_script("return document.getElementById('pad').toDataURL('image/png')")
    return base64.b64decode(data.split(",", 1)[1])


def test_browser_draws_and_sees_the_networks_answer(server):
    driver = browser()
    try:
        driver.get(server.url + "/")
        wait_for(lambda: len(shown(driver)) == 2)
        draw(driver, [(90, 60), (190, 60), (120, 230)])  # a "7", black on white
        # the page shows, for each network, what the API says of the canvas (invert=no)
        expected = server.post(canvas_png(driver), invert="no").json()["predictions"]
        want = {p["model"]: str(p["digit"]) for p in expected}
        assert wait_for(lambda: shown(driver) == want and shown(driver))
        bars = driver.execute_script(
            "return [...document.querySelectorAll('.model')[0].querySelectorAll('.p')]"
            ".map(e => Number(e.textContent))")
        assert bars == pytest.approx([round(p, 3) for p in expected[0]["probabilities"]],
                                     abs=1e-3)
    finally:
        driver.quit()


def test_browser_shows_what_each_network_looks_at(server):
    driver = browser()
    try:
        driver.get(server.url + "/")
        wait_for(lambda: len(shown(driver)) == 2)
        draw(driver, [(90, 60), (190, 60), (120, 230)])
        expected = requests.post(f"{server.url}/api/explain", data=canvas_png(driver),
                                 params={"invert": "no"}, timeout=30).json()["explanations"]
        targets = {e["model"]: str(e["target"]) for e in expected}
        explained = ("return Object.fromEntries([...document.querySelectorAll('.model')]"
                     ".map(c => [c.dataset.model, c.dataset.explained]))")
        assert wait_for(lambda: driver.execute_script(explained) == targets)
        # each heatmap is drawn: red where the attribution is most positive, blue where
        # most negative, as the API's numbers say
        for i, e in enumerate(expected):
            a = np.array(e["attribution"])
            pixels = np.array(driver.execute_script(
                f"return [...document.querySelectorAll('.heat')[{i}].getContext('2d')"
                ".getImageData(0, 0, 28, 28).data]")).reshape(28, 28, 4)
            hot, cold = np.unravel_index(a.argmax(), a.shape), np.unravel_index(a.argmin(),
                                                                                 a.shape)
            assert pixels[hot][0] > pixels[hot][2] + 60   # red
            if a.min() < -0.2 * a.max():
                assert pixels[cold][2] > pixels[cold][0] + 40  # blue
    finally:
        driver.quit()


def test_browser_picks_an_image_file(server, digits, tmp_path):
    from selenium.webdriver.common.by import By

    path = tmp_path / "digit.png"
    path.write_bytes(digits[5])
    driver = browser()
    try:
        driver.get(server.url + "/")
        wait_for(lambda: len(shown(driver)) == 2)
        driver.find_element(By.ID, "file").send_keys(str(path))
        want = {p["model"]: str(p["digit"])
                for p in server.post(digits[5], invert="no").json()["predictions"]}
        assert wait_for(lambda: shown(driver) == want and shown(driver))
    finally:
        driver.quit()


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data/mnist-10k")
def test_browser_real_digit_one_with_automatic_inversion(tmp_path):
    """A network trained briefly on real MNIST reads a drawn vertical stroke as 1 once
    "invert automatically" is on (black ink on white paper)."""
    from selenium.webdriver.common.by import By

    from mnist_bp.data.importer import import_from
    from mnist_bp.data.registry import get_dataset

    import_from(get_dataset("mnist"), SHARED, tmp_path / "data", log=lambda *_: None)
    run = train_small(tmp_path, {"data": {"validation": 0}, "model": {"hidden": [128]},
                                 "training": {"epochs": 3, "batch_size": 64}})
    s = Server(run / "checkpoints" / "best.npz")
    driver = browser()
    try:
        driver.get(s.url + "/")
        wait_for(lambda: len(shown(driver)) == 1)
        driver.find_element(By.ID, "auto").click()
        draw(driver, [(140, 40), (140, 140), (140, 240)])
        assert wait_for(lambda: list(shown(driver).values()) == ["1"])
    finally:
        driver.quit()
        assert s.stop() == 0
