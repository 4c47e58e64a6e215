"""Downloads against a local HTTP server on 127.0.0.1: never the internet."""

import multiprocessing
import os

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import dataset_arrays, gz_bytes, spec_for
from httpserver import FileServer
from mnist_bp.cli import main
from mnist_bp.data import registry as datasets
from mnist_bp.data.cache import load_cached
from mnist_bp.data.download import download_dataset, mirror_list
from mnist_bp.data.registry import FILENAMES, ROLES
from mnist_bp.errors import UserError

FAST = {"timeout": (0.5, 0.5), "retries": 1, "backoff": 0.01, "show_progress": False,
        "log": lambda message: None}


@pytest.fixture(scope="module")
def blobs():
    arrays = dataset_arrays(50, 20, seed=3)
    return {role: gz_bytes(arrays[role]) for role in ROLES}


@pytest.fixture
def server(blobs):
    with FileServer({FILENAMES[r]: b for r, b in blobs.items()}) as s:
        yield s


def official_files(folder):
    return sorted(p.name for p in folder.iterdir() if p.name in FILENAMES.values())


def assert_complete(folder, blobs):
    for role in ROLES:
        assert (folder / FILENAMES[role]).read_bytes() == blobs[role]
    assert not list(folder.glob("*.part"))
    ds = load_cached(folder)
    assert len(ds.train) == 50 and len(ds.test) == 20


def test_good_download_checksums_match(tmp_path, server, blobs):
    spec = spec_for("tiny", blobs, [server.url("good")])
    folder = download_dataset(spec, tmp_path, **FAST)
    assert_complete(folder, blobs)
    assert server.count("good") == 4


@pytest.mark.parametrize("bad", ["e404", "e500", "hang"])
def test_first_mirror_fails_second_succeeds(tmp_path, server, blobs, bad):
    spec = spec_for("tiny", blobs, [server.url(bad), server.url("good")])
    folder = download_dataset(spec, tmp_path, **FAST)
    assert_complete(folder, blobs)
    # 404 is final for a mirror; 500 and timeouts are retried once (retries=1) first
    assert server.count(bad) == (4 if bad == "e404" else 8)
    assert server.count("good") == 4


def test_corrupt_body_rejected_nothing_left(tmp_path, server, blobs):
    spec = spec_for("tiny", blobs, [server.url("corrupt")])
    with pytest.raises(UserError, match="could not download train-images-idx3-ubyte.gz from any "
                                        "of 1 mirror.*sha256 mismatch"):
        download_dataset(spec, tmp_path, **FAST)
    folder = tmp_path / "tiny"
    assert official_files(folder) == [] and not list(folder.glob("*.part"))


def test_corrupt_mirror_then_good_one(tmp_path, server, blobs):
    spec = spec_for("tiny", blobs, [server.url("corrupt"), server.url("good")])
    assert_complete(download_dataset(spec, tmp_path, **FAST), blobs)


def test_interrupted_download_resumes_with_range(tmp_path, server, blobs):
    spec = spec_for("tiny", blobs, [server.url("trunc")])
    folder = download_dataset(spec, tmp_path, **FAST)
    assert_complete(folder, blobs)
    name = FILENAMES["train_images"]
    ranges = [r for m, f, r in server.requests if f == name]
    assert ranges == [None, f"bytes={len(blobs['train_images']) // 2}-"]


def test_server_ignoring_range_restarts_cleanly(tmp_path, server, blobs):
    spec = spec_for("tiny", blobs, [server.url("norange")])
    assert_complete(download_dataset(spec, tmp_path, **FAST), blobs)
    assert server.count("norange", FILENAMES["train_images"]) == 2


def test_present_files_kept_force_refetches(tmp_path, server, blobs):
    spec = spec_for("tiny", blobs, [server.url("good")])
    folder = download_dataset(spec, tmp_path, **FAST)
    assert server.count() == 4
    download_dataset(spec, tmp_path, **FAST)
    assert server.count() == 4  # nothing fetched again
    download_dataset(spec, tmp_path, force=True, **FAST)
    assert server.count() == 8
    assert_complete(folder, blobs)


def test_force_with_dead_mirror_keeps_old_files(tmp_path, server, blobs):
    folder = download_dataset(spec_for("tiny", blobs, [server.url("good")]), tmp_path, **FAST)
    with pytest.raises(UserError):
        download_dataset(spec_for("tiny", blobs, [server.url("e500")]), tmp_path, force=True,
                         **FAST)
    assert_complete(folder, blobs)


def _download_in_process(spec, root):
    download_dataset(spec, root, **FAST)


def test_two_concurrent_downloads(tmp_path, server, blobs):
    spec = spec_for("tiny", blobs, [server.url("good")])
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_download_in_process, args=(spec, tmp_path)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0]
    assert_complete(tmp_path / "tiny", blobs)
    assert server.count() == 4  # the lock made the second process find the files in place


def test_every_mirror_unreachable(tmp_path, blobs):
    spec = spec_for("tiny", blobs, ["http://127.0.0.1:9/", "http://127.0.0.1:9/other/"])
    with pytest.raises(UserError) as err:
        download_dataset(spec, tmp_path, **FAST)
    text = str(err.value)
    assert "from any of 2 mirror(s)" in text and "connection failed" in text
    assert "--mirror URL" in text and "--from DIR" in text
    assert official_files(tmp_path / "tiny") == []


def test_proxy_from_environment(tmp_path, server, blobs, monkeypatch):
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.port}")
    # nothing listens on 127.0.0.2:9: the files can only have come through the "proxy"
    spec = spec_for("tiny", blobs, ["http://127.0.0.2:9/good/"])
    assert_complete(download_dataset(spec, tmp_path, **FAST), blobs)
    assert server.count("good") == 4


def test_mirror_order(monkeypatch, blobs):
    a, b, c = (f"http://127.0.0.1:{port}/" for port in (1, 2, 3))
    monkeypatch.setenv("MNIST_BP_MIRROR", f"{a}x, {b}y {c}")
    spec = spec_for("tiny", blobs, ["http://127.0.0.1:4/", c])
    assert mirror_list(spec, ["http://127.0.0.1:5/"]) == [
        "http://127.0.0.1:5/", f"{a}x/", f"{b}y/", c, "http://127.0.0.1:4/"]


# --- through the command line --------------------------------------------------------------

@pytest.fixture
def local_mnist(monkeypatch, blobs):
    """Make the registry's 'mnist' entry describe the test files and have no mirrors, so the
    command line can be exercised without any chance of reaching the internet."""
    spec = spec_for("mnist", blobs, [])
    monkeypatch.setitem(datasets.DATASETS, "mnist", spec)
    monkeypatch.delenv("MNIST_BP_MIRROR", raising=False)
    return spec


def test_cli_download_with_mirror(tmp_path, server, local_mnist, blobs):
    result = CliRunner().invoke(main, ["download", "--data-dir", str(tmp_path),
                                       "--mirror", server.url("good")])
    assert result.exit_code == 0, result.output
    assert "mnist ready in" in result.stdout and "50 training and 20 test images" in result.stdout
    assert_complete(tmp_path / "mnist", blobs)


def test_cli_env_mirror(tmp_path, server, local_mnist, blobs, monkeypatch):
    monkeypatch.setenv("MNIST_BP_MIRROR", f"{server.url('e404')},{server.url('good')}")
    result = CliRunner().invoke(main, ["download", "--data-dir", str(tmp_path), "--retries", "0"])
    assert result.exit_code == 0, result.output
    assert_complete(tmp_path / "mnist", blobs)


def test_cli_every_mirror_unreachable_one_line(tmp_path, local_mnist):
    result = CliRunner().invoke(main, ["download", "--data-dir", str(tmp_path), "--mirror",
                                       "http://127.0.0.1:9/", "--retries", "0", "--timeout", "1"])
    assert result.exit_code == 1
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1 and "could not download" in error_lines[0]
    assert "Traceback" not in result.output
    assert official_files(tmp_path / "mnist") == []


def test_cli_unknown_dataset(tmp_path):
    result = CliRunner().invoke(main, ["download", "--dataset", "cifar", "--data-dir",
                                       str(tmp_path)])
    assert result.exit_code == 2
    assert "'cifar' is not one of 'mnist', 'fashion-mnist', 'kmnist'" in result.output
    assert not os.listdir(tmp_path)


def test_cli_train_fetches_missing_dataset(tmp_path, server, local_mnist, blobs, monkeypatch):
    monkeypatch.setenv("MNIST_BP_MIRROR", server.url("good"))
    monkeypatch.setenv("MNIST_BP_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(main, ["train", "--set", "data.printed=false",
                                       "--run-dir", str(tmp_path / "run"), "--quiet",
                                       "--set", "training.epochs=1", "--set", "model.hidden=[8]"])
    assert result.exit_code == 0, result.output
    assert_complete(tmp_path / "data" / "mnist", blobs)
    assert np.isfinite(float(result.stdout.split("test accuracy ")[1].split()[0]))
