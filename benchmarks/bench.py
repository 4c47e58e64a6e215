"""`make bench`: the benchmark workload (configs/bench.yaml) in mnist-bp, PyTorch (its SGD
both plain and fused: the faster median is the reference) and scikit-learn, alternating in one
run, plus the matmul floor (also against mnist-bp's step in one process, alternating blocks of
steps: the steadier ratio), evaluation, start-up and dataset-loading times, and a scaling table
(mnist-bp against the PyTorch reference as the hidden width and the batch size change;
`--part scaling` runs it alone). Only ratios measured in the same run mean anything: absolute
times drift by +-30 % on a shared machine.

    python benchmarks/bench.py --data-dir D [--rounds 3] [--epochs 3] [--part all|main|scaling]
                                            [--torch-optimizer plain|fused]

Needs Fashion-MNIST in D (`mnist-bp download --dataset fashion-mnist --from
/usr/share/datasets/fashion-mnist --data-dir D` after `apt-get install dataset-fashion-mnist`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TIME = "/usr/bin/time"


def timed(cmd: list[str]) -> tuple[str, float]:
    """Run `cmd` under /usr/bin/time -v; (stdout, peak RSS in MB)."""
    proc = subprocess.run([TIME, "-v", *cmd], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark command failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    return proc.stdout, rss / 1024


def run_mnist_bp(data_dir: str, epochs: int, hidden: int = 512,
                 batch: int = 128) -> tuple[list[float], float]:
    with tempfile.TemporaryDirectory() as tmp:
        _, rss = timed([sys.executable, "-m", "mnist_bp", "train", "configs/bench.yaml", "--set",
                        f"training.epochs={epochs}", "--set", f"model.hidden=[{hidden},{hidden}]",
                        "--set", f"training.batch_size={batch}", "--quiet", "--no-report",
                        "--data-dir", data_dir, "--run-dir", f"{tmp}/run"])
        lines = Path(f"{tmp}/run/metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    return [r["train_seconds"] for r in rows], rss


def run_reference(script: str, data_dir: str, epochs: int, *extra: str) -> tuple[list[float],
                                                                              float]:
    out, rss = timed([sys.executable, f"benchmarks/{script}", "--data-dir", data_dir,
                      "--epochs", str(epochs), *extra])
    return json.loads(out.strip().splitlines()[-1])["epoch_seconds"], rss


def floor_step(batch: int = 128, sizes=(784, 512, 512, 10)):
    """A function doing every float32 matmul of one training step at its real shapes, with
    out=: forward x@W per layer, backward x^T@g per layer and g@W^T for all but the first."""
    rng = np.random.default_rng(0)
    f32 = np.float32
    Ws = [rng.random((a, b), dtype=f32) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    acts = [rng.random((batch, s), dtype=f32) for s in sizes]
    dWs = [np.empty_like(W) for W in Ws]
    dxs = [np.empty((batch, s), f32) for s in sizes]

    def step():
        for i, W in enumerate(Ws):
            np.matmul(acts[i], W, out=acts[i + 1])
        for i in reversed(range(len(Ws))):
            np.matmul(acts[i].T, acts[i + 1], out=dWs[i])
            if i:
                np.matmul(acts[i + 1], Ws[i].T, out=dxs[i])

    return step


def floor_seconds(step, n: int) -> float:
    """Seconds a call of the floor's `step` takes, over `n` calls in a row."""
    start = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - start) / n


def matmul_floor(n_train: int, batch: int = 128, sizes=(784, 512, 512, 10), repeats=200) -> float:
    """The floor's step (`floor_step`) timed in 5 blocks of `repeats`, scaled to an epoch."""
    step = floor_step(batch, sizes)
    floor_seconds(step, 20)  # warm-up
    times = [floor_seconds(step, repeats) for _ in range(5)]
    return statistics.median(times) * n_train / batch


def step_vs_floor(data_dir: str, blocks: int = 21, steps: int = 100) -> tuple[float, float, float]:
    """mnist-bp's training step (the real Trainer on configs/bench.yaml: batch preparation,
    forward, backward, update) against the floor's step, in one process, alternating blocks
    of `steps` steps, so that the machine's drift hits both alike: (median ratio, lowest,
    highest) over the blocks. Steadier than the ratio of whole runs measured seconds apart."""
    from augment_share import step_seconds

    from mnist_bp.config import load_config
    from mnist_bp.data.batches import Normalizer
    from mnist_bp.data.datadir import load_dataset
    from mnist_bp.training import Trainer

    cfg, _ = load_config("bench")
    train = load_dataset(cfg.data.dataset, data_dir, fetch=False, in_memory=True).train
    trainer = Trainer(cfg, train, None, Normalizer.fit(cfg.data.normalize, train.images))
    floor = floor_step(cfg.training.batch_size, (784, *cfg.model.hidden, 10))
    step_seconds(trainer, 20, prefetch=False)  # warm-up
    floor_seconds(floor, 20)
    ratios = [step_seconds(trainer, steps, prefetch=False) / floor_seconds(floor, steps)
              for _ in range(blocks)]
    return statistics.median(ratios), min(ratios), max(ratios)


def eval_seconds(data_dir: str) -> float:
    """Forward pass and metrics over the 10,000 test images, data already loaded."""
    from mnist_bp import rng
    from mnist_bp.config import load_config
    from mnist_bp.data.batches import BatchMaker, Normalizer
    from mnist_bp.data.datadir import load_dataset
    from mnist_bp.nn.losses import make_loss
    from mnist_bp.nn.mlp import MLP
    from mnist_bp.scoring import evaluate

    cfg, _ = load_config("bench")
    test = load_dataset("fashion-mnist", data_dir, fetch=False).test
    model = MLP(cfg.model, rng.stream(0, rng.INIT), 784, 10)
    maker = BatchMaker(np.asarray(test.images), np.asarray(test.labels), Normalizer())
    loss = make_loss(cfg.loss)
    evaluate(model, loss, maker, cfg.training.eval_batch_size)
    times = []
    for _ in range(7):
        start = time.perf_counter()
        evaluate(model, loss, maker, cfg.training.eval_batch_size)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def help_seconds() -> float:
    times = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mnist_bp", "--help"], capture_output=True,
                       check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def load_seconds(data_dir: str) -> tuple[float, float]:
    """(cached load of the training set, parsing the gzip IDX files)."""
    from mnist_bp.data.cache import load_cached, parse_sources

    folder = Path(data_dir) / "fashion-mnist"
    cached, parsed = [], []
    for _ in range(5):
        start = time.perf_counter()
        ds = load_cached(folder)
        np.asarray(ds.train.images).sum(dtype=np.uint64)  # touch every byte of the mmap
        cached.append(time.perf_counter() - start)
    for _ in range(2):
        start = time.perf_counter()
        parse_sources(folder)
        parsed.append(time.perf_counter() - start)
    return statistics.median(cached), statistics.median(parsed)


SCALING = [(256, 128), (512, 128), (1024, 128), (2048, 128), (512, 32), (512, 512)]


def scaling_table(data_dir: str, torch_optimizer: str, rounds: int = 2, epochs: int = 2) -> str:
    """mnist-bp against PyTorch (SGD implementation `torch_optimizer`) in the same run as the
    hidden width (two layers) and the batch size grow: median epoch of each, alternating,
    `rounds` x `epochs` epochs apiece."""
    lines = ["| hidden | batch | mnist-bp epoch (s) | PyTorch epoch (s) | x PyTorch |",
             "|---|---|---|---|---|"]
    for hidden, batch in SCALING:
        ours, theirs = [], []
        for _ in range(rounds):
            ours += run_mnist_bp(data_dir, epochs, hidden, batch)[0]
            theirs += run_reference("torch_ref.py", data_dir, epochs, "--hidden", str(hidden),
                                    "--batch", str(batch), "--optimizer", torch_optimizer)[0]
        a, b = statistics.median(ours), statistics.median(theirs)
        lines.append(f"| {hidden}-{hidden} | {batch} | {a:.3f} | {b:.3f} | {a / b:.2f} |")
        print(lines[-1], file=sys.stderr)
    return "\n".join(lines)


TORCH_VARIANTS = ("plain", "fused")  # SGD's per-parameter loop (CPU default), one fused kernel


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--part", choices=["all", "main", "scaling"], default="all",
                    help="main: the three-way table; scaling: mnist-bp vs PyTorch by width and "
                         "batch (needs torch)")
    ap.add_argument("--torch-optimizer", choices=TORCH_VARIANTS, default="fused",
                    help="PyTorch's SGD for --part scaling (with all, the faster of the main "
                         "table's variants)")
    args = ap.parse_args()
    from mnist_bp.data.datadir import load_dataset, resolve_data_dir

    data_dir = str(resolve_data_dir(args.data_dir))
    n_train = len(load_dataset("fashion-mnist", data_dir, fetch=False).train)
    has_torch = importlib.util.find_spec("torch") is not None
    if args.part == "scaling":
        print(scaling_table(data_dir, args.torch_optimizer))
        return

    contenders = {"mnist-bp": lambda: run_mnist_bp(data_dir, args.epochs)}
    if has_torch:
        for variant in TORCH_VARIANTS:
            contenders[f"PyTorch ({variant} SGD)"] = (
                lambda v=variant: run_reference("torch_ref.py", data_dir, args.epochs,
                                                "--optimizer", v))
    if importlib.util.find_spec("sklearn"):
        contenders["scikit-learn"] = lambda: run_reference("sklearn_ref.py", data_dir, args.epochs)
    epochs = {name: [] for name in contenders}
    rss = {name: [] for name in contenders}
    floors = []
    for r in range(args.rounds):  # alternate, so drift hits everyone alike
        for name, fn in contenders.items():
            if name == "scikit-learn" and r > 0:
                continue  # slow and stable: one round is enough
            seconds, peak = fn()
            epochs[name] += seconds
            rss[name].append(peak)
            print(f"round {r + 1}: {name:<20} epochs {', '.join(f'{s:.2f}' for s in seconds)} s,"
                  f" peak RSS {peak:.0f} MB", file=sys.stderr)
            if name == "mnist-bp":
                ours = statistics.median(seconds)
        floors.append(matmul_floor(n_train))
        print(f"round {r + 1}: matmul floor         {floors[-1]:.2f} s an epoch; mnist-bp "
              f"{ours / floors[-1]:.2f} x it this round", file=sys.stderr)

    median = {name: statistics.median(v) for name, v in epochs.items()}
    floor = statistics.median(floors)
    torch_names = [name for name in contenders if name.startswith("PyTorch")]
    # the reference is the fastest PyTorch variant measured in this run
    best_torch = min(torch_names, key=median.get) if torch_names else None
    ref = median[best_torch] if best_torch else None
    lines = ["| | median epoch (s) | samples/s | x PyTorch | x matmul floor | peak RSS (MB) |",
             "|---|---|---|---|---|---|"]
    for name in contenders:
        ratio = f"{median[name] / ref:.2f}" if ref else "-"
        label = f"{name}, the reference" if name == best_torch else name
        lines.append(f"| {label} | {median[name]:.3f} | {n_train / median[name]:,.0f} | {ratio} "
                     f"| {median[name] / floor:.2f} | {max(rss[name]):.0f} |")
    lines.append(f"| matmul floor | {floor:.3f} | {n_train / floor:,.0f} | "
                 f"{floor / ref:.2f} | 1.00 | - |" if ref else
                 f"| matmul floor | {floor:.3f} | {n_train / floor:,.0f} | - | 1.00 | - |")
    cached, parsed = load_seconds(data_dir)
    ratio, low, high = step_vs_floor(data_dir)
    lines += ["",
              f"mnist-bp's training step against the floor's, alternating in one process: "
              f"{ratio:.2f} x (21 blocks of 100 steps: {low:.2f}-{high:.2f})",
              f"evaluate 10,000 test images (in-process, bench net): "
              f"{eval_seconds(data_dir):.3f} s",
              f"`mnist-bp --help` (whole process): {help_seconds():.3f} s",
              f"load cached Fashion-MNIST training set: {cached:.3f} s "
              f"(parsing the gzip IDX files: {parsed:.3f} s)"]
    print("\n".join(lines), flush=True)
    if args.part == "all" and best_torch:
        variant = best_torch.split("(")[1].split()[0]
        print("\n" + scaling_table(data_dir, variant))


if __name__ == "__main__":
    from mnist_bp.errors import UserError

    try:
        main()
    except UserError as exc:  # e.g. Fashion-MNIST not imported yet: one line, not a traceback
        raise SystemExit(f"Error: {exc}") from None
