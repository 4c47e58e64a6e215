"""`mnist-bp report`: what the files hold, errors, several runs, and train's own report."""

from __future__ import annotations

import json
import re
import shutil
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import dataset_arrays, reference_probabilities
from mnist_bp import report
from mnist_bp.cli import main

pytest.importorskip("matplotlib")


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def made(trained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    result = invoke("report", trained_run, "--out", out, "--data-dir", trained_run.parent / "data")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"report: {out / 'report.html'}"
    return out


def test_files_exist_and_decode(made):
    shown = sorted(p.name for p in made.iterdir() if not p.name.startswith("."))
    assert shown == sorted(report.FILES)
    for name in ("learning_curves.png", "confusion_matrix.png", "mistakes.png", "explain.png"):
        with Image.open(made / name) as im:
            im.load()
            assert im.format == "PNG"
            assert im.width >= 500 and im.height >= 150


def test_what_the_network_looks_at(trained_run, made):
    """The section's class maps are explain's mean attributions of each class's own test
    images, and each mistake is explained for both classes."""
    from mnist_bp.data.datadir import load_dataset
    from mnist_bp.explain import explain
    from mnist_bp.model import load

    page = (made / "report.html").read_text()
    assert "<h2>What the network looks at</h2>" in page
    run = report.read_run(trained_run)
    report.score_run(run, trained_run.parent / "data")
    model = load(trained_run / "checkpoints" / "best.npz")
    test = load_dataset("mnist", trained_run.parent / "data").test
    labels = np.asarray(test.labels)
    for c in (0, 7):
        mine = np.flatnonzero(labels == c)[:report.LOOKS_PER_CLASS]
        x = np.asarray(test.images[mine], np.float32) / 255
        expected = explain(model, x, c, steps=report.LOOKS_STEPS).attributions.mean(axis=0)
        assert np.allclose(run.looks["class_maps"][c], expected, atol=1e-7)
    assert len(run.looks["mistake_maps"]) == min(report.LOOKS_MISTAKES, len(run.mistakes))
    mistakes = run.mistakes[:report.LOOKS_MISTAKES]
    for (image, true, pred, _), (for_pred, for_true) in zip(mistakes, run.looks["mistake_maps"],
                                                           strict=True):
        x = image[None].astype(np.float32) / 255
        assert np.array_equal(for_pred, explain(model, x, pred, steps=32).attributions[0])
        assert np.array_equal(for_true, explain(model, x, true, steps=32).attributions[0])


def test_report_never_replaces_a_file_it_did_not_write(trained_run, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "confusion_matrix.png").write_bytes(b"my own picture")
    result = invoke("report", trained_run, "--out", out, "--data-dir",
                    trained_run.parent / "data")
    assert result.exit_code == 1
    assert result.output == (f"Error: {out / 'confusion_matrix.png'}: already exists and was "
                             "not written by this run; it is left as it is; move it away, or "
                             "pass another --out\n")
    assert sorted(p.name for p in out.iterdir()) == ["confusion_matrix.png"]
    assert (out / "confusion_matrix.png").read_bytes() == b"my own picture"
    # its own earlier report it replaces
    (out / "confusion_matrix.png").unlink()
    for _ in range(2):
        assert invoke("report", trained_run, "--out", out, "--data-dir",
                      trained_run.parent / "data").exit_code == 0


def cells(page: str, first: str, table: str = "summary") -> list[str]:
    """The cells of the row of table `table` whose first cell is `first`."""
    body = re.search(rf'<table [^>]*id="{table}">(.*?)</table>', page, re.S).group(1)
    row = re.search(rf"<tr><td>{re.escape(first)}</td>(.*?)</tr>", body)
    assert row, first
    return re.findall(r"<td>(.*?)</td>", row.group(1))


def test_page_numbers_equal_the_run_files(made, trained_run):
    page = (made / "report.html").read_text()
    summary = json.loads((trained_run / "summary.json").read_text())
    assert cells(page, "test accuracy") == [f"{summary['test_accuracy']:.4f}"]
    assert cells(page, "test loss") == [f"{summary['test_loss']:.4f}"]
    assert cells(page, "best epoch") == [str(summary["best_epoch"])]
    assert cells(page, "best validation accuracy") == [f"{summary['best_val_accuracy']:.4f}"]
    rows = [json.loads(line)
            for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        got = cells(page, str(r["epoch"]), "epochs-0")
        assert got[:4] == [f"{r['train_loss']:.4f}", f"{r['train_acc']:.4f}",
                           f"{r['val_loss']:.4f}", f"{r['val_acc']:.4f}"]
    assert "hidden: [32]" in page  # the resolved config


def test_page_loads_nothing_from_elsewhere(made):
    page = (made / "report.html").read_text()
    sources = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "url(" not in page and "@import" not in page and "<script" not in page


def test_confusion_matches_evaluate(trained_run):
    data = trained_run.parent / "data"
    run = report.read_run(trained_run)
    report.score_run(run, data)
    evaluated = json.loads(invoke("evaluate", trained_run / "checkpoints" / "best.npz",
                                  "--data-dir", data, "--json").stdout)
    assert run.scores["confusion"].sum() == evaluated["n"] == 200
    assert run.scores["confusion"].tolist() == evaluated["confusion_matrix"]
    # ...and both equal a forward pass computed independently from the file's arrays
    test = dataset_arrays()
    pred = reference_probabilities(trained_run / "checkpoints" / "best.npz",
                                   test["test_images"]).argmax(axis=1)
    expected = np.zeros((10, 10), int)
    np.add.at(expected, (test["test_labels"], pred), 1)
    assert run.scores["confusion"].tolist() == expected.tolist()
    assert run.scores["per_class"] == evaluated["per_class"]
    inverted = json.loads(invoke("evaluate", trained_run / "checkpoints" / "best.npz",
                                 "--data-dir", data, "--json", "--invert").stdout)
    assert run.scores["inverted_accuracy"] == inverted["accuracy"]
    # the mistakes are wrong and sorted by confidence
    assert all(true != pred for _, true, pred, _ in run.mistakes)
    confidences = [c for *_, c in run.mistakes]
    assert confidences == sorted(confidences, reverse=True)


def test_named_classes_label_the_tables(trained_run):
    """Fashion-MNIST's and KMNIST's classes appear by name; MNIST's digits as themselves."""
    assert report.class_labels("mnist") == tuple("0123456789")
    assert report.class_labels("fashion-mnist")[6] == "6 Shirt"
    assert report.class_labels("kmnist")[9] == "9 wo"
    run = report.read_run(trained_run)
    report.score_run(run, trained_run.parent / "data")
    figures = dict.fromkeys(report.FILES[1:], b"")
    assert cells(report.page([run], figures), "3", "per-class-0")  # digits: "3"
    run.dataset = "fashion-mnist"
    page = report.page([run], figures)
    row = cells(page, "0 T-shirt/top", "per-class-0")
    assert row[-1] == str(run.scores["per_class"][0]["support"])
    assert cells(page, "9 Ankle boot", "per-class-0")


def test_two_runs_overlaid_with_both_labels(trained_run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(trained_run, other)
    runs = [report.read_run(trained_run), report.read_run(other)]
    plt = report.require_matplotlib()
    fig = report.curves_figure(plt, runs)
    labels = [t.get_text() for t in fig.axes[2].get_legend().get_texts()]
    assert labels == [trained_run.name, "other"]
    plt.close(fig)
    result = invoke("report", trained_run, other, "--out", tmp_path / "cmp", "--data-dir",
                    trained_run.parent / "data")
    assert result.exit_code == 0, result.output
    page = (tmp_path / "cmp" / "report.html").read_text()
    assert "<h2>Runs</h2>" in page and f"<td>{trained_run.name}</td>" in page
    assert "<td>other</td>" in page


def test_several_runs_need_out(trained_run):
    result = invoke("report", trained_run, trained_run)
    assert result.exit_code == 1
    assert result.output == "Error: several runs need --out DIR for their common report\n"


def test_not_a_run_dir_and_no_metrics_are_one_line_and_write_nothing(tmp_path, trained_run):
    plain = tmp_path / "plain"
    plain.mkdir()
    result = invoke("report", plain)
    assert result.exit_code == 1
    assert result.output == (f"Error: {plain}: not a run directory (no config.yaml); pass a "
                             "folder written by `mnist-bp train`\n")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(trained_run / "config.yaml", fresh / "config.yaml")
    result = invoke("report", fresh, "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {fresh}: no metrics.jsonl rows yet;")
    assert sorted(p.name for p in fresh.iterdir()) == ["config.yaml"]
    assert not (tmp_path / "out").exists() and not (plain / "report").exists()


def test_unfinished_run_shows_what_exists(trained_run, tmp_path):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(trained_run, unfinished)
    shutil.rmtree(unfinished / "checkpoints")
    (unfinished / "summary.json").unlink()
    result = invoke("report", unfinished)
    assert result.exit_code == 0, result.output
    out = unfinished / "report"
    assert sorted(p.name for p in out.iterdir()) == [".mnist-bp-files.json",
                                                     "learning_curves.png", "report.html"]
    page = (out / "report.html").read_text()
    assert "missing checkpoints/best.npz" in page and "missing summary.json" in page


def test_train_writes_its_report_unless_told_not_to(tmp_path, data_dir):
    common = ["train", "--set", "data.printed=false",
              "--data-dir", data_dir, "--set", "model.hidden=[16]", "--set",
              "training.epochs=1"]
    result = invoke(*common, "--run-dir", tmp_path / "a")
    assert result.exit_code == 0, result.output
    assert f"report: {tmp_path / 'a' / 'report' / 'report.html'}" in result.stdout
    made = sorted(p.name for p in (tmp_path / "a" / "report").iterdir())
    assert made == sorted([*report.FILES, ".mnist-bp-files.json"])
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    page = (tmp_path / "a" / "report" / "report.html").read_text()
    assert f"{summary['test_accuracy']:.4f}" in page
    result = invoke(*common, "--run-dir", tmp_path / "b", "--no-report")
    assert result.exit_code == 0 and not (tmp_path / "b" / "report").exists()


def test_without_matplotlib_one_line_and_train_skips(tmp_path, data_dir, trained_run,
                                                    monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    result = invoke("report", trained_run, "--out", tmp_path / "r")
    assert result.exit_code == 1
    assert result.output == ("Error: report needs matplotlib; install the plot extra: pip "
                             "install 'mnist-bp[plot]' (or matplotlib)\n")
    result = invoke("train", "--set", "data.printed=false",
                    "--data-dir", data_dir, "--run-dir", tmp_path / "t", "--set",
                    "model.hidden=[8]", "--set", "training.epochs=1")
    assert result.exit_code == 0
    assert "report skipped: matplotlib is not installed" in result.output
    assert not (tmp_path / "t" / "report").exists()
