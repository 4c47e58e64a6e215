"""`make bench`: the benchmark workload (configs/bench.yaml) in mnist-bp (float32 by numpy,
float32 by oneDNN, bfloat16), PyTorch (float32 and bfloat16 autocast, its SGD both plain and
fused: the faster median of each precision is its reference) and scikit-learn, alternating in
one run; the matmul floor of each way of multiplying (also against mnist-bp's step in one
process, alternating blocks of steps: the steadier ratio); GFLOP/s of the steps, of their
products and of the largest GEMM the CPU reaches; evaluation, start-up and dataset-loading
times; and a scaling table (mnist-bp against PyTorch as the hidden width and the batch size
change; `--part scaling` runs it alone). Only ratios measured in the same run mean anything:
absolute times drift by +-30 % on a shared machine.

    python benchmarks/bench.py --data-dir D [--rounds 5] [--epochs 3] [--part all|main|scaling]
                                            [--torch-optimizer plain|fused]

Needs Fashion-MNIST in D (`mnist-bp download --dataset fashion-mnist --from
/usr/share/datasets/fashion-mnist --data-dir D` after `apt-get install dataset-fashion-mnist`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
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


def timed(cmd: list[str], env: dict | None = None) -> tuple[str, float]:
    """Run `cmd` under /usr/bin/time -v; (stdout, peak RSS in MB)."""
    proc = subprocess.run([TIME, "-v", *cmd], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise SystemExit(f"benchmark command failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    return proc.stdout, rss / 1024


def run_mnist_bp(data_dir: str, epochs: int, hidden: int = 512, batch: int = 128,
                 precision: str = "float32", gemm: str = "auto") -> tuple[list[float], float]:
    with tempfile.TemporaryDirectory() as tmp:
        _, rss = timed([sys.executable, "-m", "mnist_bp", "train", "configs/bench.yaml", "--set",
                        f"training.epochs={epochs}", "--set", f"model.hidden=[{hidden},{hidden}]",
                        "--set", f"training.batch_size={batch}", "--set",
                        f"training.precision={precision}", "--quiet", "--no-report",
                        "--data-dir", data_dir, "--run-dir", f"{tmp}/run"],
                       env={"MNIST_BP_GEMM": gemm})
        lines = Path(f"{tmp}/run/metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    return [r["train_seconds"] for r in rows], rss


def run_reference(script: str, data_dir: str, epochs: int, *extra: str) -> tuple[list[float],
                                                                              float]:
    out, rss = timed([sys.executable, f"benchmarks/{script}", "--data-dir", data_dir,
                      "--epochs", str(epochs), *extra])
    return json.loads(out.strip().splitlines()[-1])["epoch_seconds"], rss


# how mnist-bp can multiply: (label, MNIST_BP_GEMM, training.precision, nn.products kind)
WAYS = [("float32, numpy", "numpy", "float32", "numpy"),
        ("float32, oneDNN", "onednn", "float32", "onednn"),
        ("bfloat16", "onednn", "bfloat16", "onednn-bfloat16")]


NO_BF16 = ("this CPU has no native bfloat16 matrix products (AVX512_BF16 or AMX): the bfloat16 "
           "rows are left out (mnist-bp would train in float32, PyTorch's autocast would "
           "emulate bfloat16 about 13 x slower than its float32)")


def precisions() -> tuple[str, ...]:
    """The precisions worth timing here: bfloat16 only where the CPU multiplies it natively."""
    from mnist_bp.nn import onednn

    native = onednn.library() is not None and onednn.cpu_has_bf16()
    return ("float32", "bfloat16") if native else ("float32",)


def ways() -> list[tuple[str, str, str, str]]:
    timed_here = precisions()
    return [w for w in WAYS if w[2] in timed_here]


def step_flops(batch: int = 128, sizes=(784, 512, 512, 10)) -> int:
    """Floating-point operations of one step's products: forward x@W and backward x^T@g per
    layer, g@W^T for all but the first."""
    pairs = [a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    return 2 * batch * (2 * sum(pairs) + sum(pairs[1:]))


def floor_step(batch: int = 128, sizes=(784, 512, 512, 10), kind: str = "numpy"):
    """A function doing every matrix product of one training step at its real shapes, the way
    `kind` (nn.products.KINDS) does them (bfloat16: the conversions included): forward x@W
    per layer, backward x^T@g per layer and g@W^T for all but the first."""
    from mnist_bp.nn.products import KINDS

    rng = np.random.default_rng(0)
    f32 = np.float32
    Ws = [rng.random((a, b), dtype=f32) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    acts = [rng.random((batch, s), dtype=f32) for s in sizes]
    dWs = [np.empty_like(W) for W in Ws]
    dxs = [np.empty((batch, s), f32) for s in sizes]
    products = [KINDS[kind]() for _ in Ws]

    def step():
        for i, W in enumerate(Ws):
            products[i].forward(acts[i], W, acts[i + 1], True)
        for i in reversed(range(len(Ws))):
            products[i].backward(acts[i], acts[i + 1], Ws[i], dWs[i], None,
                                 dxs[i] if i else None)

    return step


def floor_seconds(step, n: int) -> float:
    """Seconds a call of the floor's `step` takes, over `n` calls in a row."""
    start = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - start) / n


def matmul_floor(n_train: int, batch: int = 128, sizes=(784, 512, 512, 10), repeats=200,
                 kind: str = "numpy") -> float:
    """The floor's step (`floor_step`) timed in 5 blocks of `repeats`, scaled to an epoch."""
    step = floor_step(batch, sizes, kind)
    floor_seconds(step, 20)  # warm-up
    times = [floor_seconds(step, repeats) for _ in range(5)]
    return statistics.median(times) * n_train / batch


def use(gemm: str) -> str:
    """Set MNIST_BP_GEMM=`gemm` in this process, as for `mnist-bp train` (a Trainer built
    afterwards arranges the thread pools for it); the float32 products it gives here."""
    os.environ["MNIST_BP_GEMM"] = gemm
    from mnist_bp.precision import float32_products

    return float32_products()


def largest_gemm(kind: str, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n x n x n product: the most this CPU does by numpy, oneDNN float32 or
    oneDNN bfloat16 (inputs already bfloat16: the practical peak)."""
    from mnist_bp.nn import onednn

    rng = np.random.default_rng(0)
    a, b = (rng.random((n, n), dtype=np.float32) for _ in range(2))
    out = np.empty((n, n), np.float32)
    if kind == "numpy":
        def run():
            np.matmul(a, b, out=out)
    else:
        if kind == "onednn-bfloat16":
            a, b = (onednn.to_bfloat16(m, np.empty(m.shape, np.uint16)) for m in (a, b))

        def run():
            onednn.gemm(a, b, out)
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 2 * n ** 3 / min(times) / 1e9


TORCH_PEAK = """
import json, time, torch
a, b = torch.rand(2048, 2048), torch.rand(2048, 2048)
out = {}
for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
    x, y = a.to(dtype), b.to(dtype)
    x @ y
    times = []
    for _ in range(5):
        t = time.perf_counter(); x @ y; times.append(time.perf_counter() - t)
    out[name] = 2 * 2048 ** 3 / min(times) / 1e9
print(json.dumps(out))
"""


def step_vs_floor(data_dir: str, kind: str, precision: str, blocks: int = 21,
                  steps: int = 100) -> tuple[float, float, float, float, float]:
    """mnist-bp's training step (the real Trainer on configs/bench.yaml: batch preparation,
    forward, backward, update) against the floor's step of the same products, in one
    process, alternating blocks of `steps` steps, so that the machine's drift hits both
    alike: (median ratio, lowest, highest, median step seconds, median floor seconds)."""
    from augment_share import step_seconds

    from mnist_bp.config import load_config
    from mnist_bp.data.batches import Normalizer
    from mnist_bp.data.datadir import load_dataset
    from mnist_bp.training import Trainer

    cfg, _ = load_config("bench", [f"training.precision={precision}"])
    train = load_dataset(cfg.data.dataset, data_dir, fetch=False).train
    trainer = Trainer(cfg, train, None, Normalizer.fit(cfg.data.normalize, train.images))
    assert trainer.products == kind, (trainer.products, kind)
    floor = floor_step(cfg.training.batch_size, (784, *cfg.model.hidden, 10), kind)
    step_seconds(trainer, 20, prefetch=False)  # warm-up
    floor_seconds(floor, 20)
    ours, floors = [], []
    for _ in range(blocks):
        ours.append(step_seconds(trainer, steps, prefetch=False))
        floors.append(floor_seconds(floor, steps))
    ratios = [a / b for a, b in zip(ours, floors, strict=True)]
    return (statistics.median(ratios), min(ratios), max(ratios), statistics.median(ours),
            statistics.median(floors))


def products_report(data_dir: str, gemm: str, precision: str, kind: str) -> dict:
    """`--part products` (run in its own process per way of multiplying, so that one way's
    thread pools never slow another's): floor, step against floor, largest GEMM."""
    use(gemm)
    ratio, low, high, step, floor = step_vs_floor(data_dir, kind, precision)
    return {"ratio": ratio, "low": low, "high": high, "step": step, "floor": floor,
            "peak": largest_gemm(kind)}


def products_table(data_dir: str) -> list[str]:
    """GFLOP/s of mnist-bp's step and of its products alone, by each way of multiplying,
    and of the largest GEMM each reaches (plus PyTorch's, where installed)."""
    flops = step_flops()
    lines = ["| mnist-bp | step GFLOP/s | products alone GFLOP/s | step / products | "
             "2048^3 GEMM GFLOP/s |", "|---|---|---|---|---|"]
    for label, _, _, kind in ways():
        out, _ = timed([sys.executable, "benchmarks/bench.py", "--data-dir", data_dir,
                        "--part", "products", "--products", kind])
        r = json.loads(out.strip().splitlines()[-1])
        lines.append(f"| {label} | {flops / r['step'] / 1e9:.0f} | {flops / r['floor'] / 1e9:.0f}"
                     f" | {r['ratio']:.2f} ({r['low']:.2f}-{r['high']:.2f}) | {r['peak']:.0f} |")
        print(lines[-1], file=sys.stderr)
    if importlib.util.find_spec("torch"):
        peak = json.loads(subprocess.run([sys.executable, "-c", TORCH_PEAK], capture_output=True,
                                         text=True, check=True).stdout)
        if "bfloat16" in precisions():
            lines.append(f"| (PyTorch matmul, float32 / bfloat16) | | | | "
                         f"{peak['float32']:.0f} / {peak['bfloat16']:.0f} |")
        else:
            lines.append(f"| (PyTorch matmul, float32) | | | | {peak['float32']:.0f} |")
    return lines


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
    """mnist-bp against PyTorch (SGD implementation `torch_optimizer`), each in float32 and in
    bfloat16, in the same run as the hidden width (two layers) and the batch size grow:
    median epoch of each, alternating, `rounds` x `epochs` epochs apiece."""
    header = "| hidden | batch |" + "".join(
        f" mnist-bp {p} (s) | PyTorch {p} (s) | x PyTorch |" for p in precisions())
    lines = [header, "|---|---|" + "---|---|---|" * len(precisions())]
    has_torch = importlib.util.find_spec("torch") is not None
    for hidden, batch in SCALING:
        cells = []
        for precision in precisions():
            ours, theirs = [], []
            for _ in range(rounds):
                ours += run_mnist_bp(data_dir, epochs, hidden, batch, precision)[0]
                if has_torch:
                    theirs += run_reference("torch_ref.py", data_dir, epochs, "--hidden",
                                            str(hidden), "--batch", str(batch), "--optimizer",
                                            torch_optimizer, "--precision", precision)[0]
            a = statistics.median(ours)
            b = statistics.median(theirs) if theirs else float("nan")
            cells += [f"{a:.3f}", f"{b:.3f}", f"{a / b:.2f}"]
        lines.append(f"| {hidden}-{hidden} | {batch} | {' | '.join(cells)} |")
        print(lines[-1], file=sys.stderr)
    return "\n".join(lines)


TORCH_VARIANTS = ("plain", "fused")  # SGD's per-parameter loop (CPU default), one fused kernel


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--part", choices=["all", "main", "scaling", "products"], default="all",
                    help="main: the table of tools; scaling: mnist-bp vs PyTorch by width and "
                         "batch (needs torch); products: one way of multiplying's floor, "
                         "step and peak as JSON (used by main)")
    ap.add_argument("--products", choices=[w[3] for w in WAYS], default="numpy",
                    help="for --part products")
    ap.add_argument("--torch-optimizer", choices=TORCH_VARIANTS, default="fused",
                    help="PyTorch's SGD for --part scaling (with all, the faster of the main "
                         "table's float32 variants)")
    args = ap.parse_args()
    from mnist_bp.data.datadir import load_dataset, resolve_data_dir

    data_dir = str(resolve_data_dir(args.data_dir))
    if args.part == "products":
        way = next(w for w in WAYS if w[3] == args.products)
        print(json.dumps(products_report(data_dir, *way[1:])))
        return
    n_train = len(load_dataset("fashion-mnist", data_dir, fetch=False).train)
    has_torch = importlib.util.find_spec("torch") is not None
    if args.part == "scaling":
        print(scaling_table(data_dir, args.torch_optimizer))
        return

    contenders = {f"mnist-bp {label}": (lambda g=gemm, p=precision:
                                        run_mnist_bp(data_dir, args.epochs, precision=p, gemm=g))
                  for label, gemm, precision, _ in ways()}
    if has_torch:
        for precision in precisions():
            for variant in TORCH_VARIANTS:
                name = (f"PyTorch float32 ({variant} SGD)" if precision == "float32" else
                        f"PyTorch bfloat16 autocast ({variant} SGD)")
                contenders[name] = (
                    lambda v=variant, p=precision: run_reference(
                        "torch_ref.py", data_dir, args.epochs, "--optimizer", v,
                        "--precision", p))
    if importlib.util.find_spec("sklearn"):
        contenders["scikit-learn"] = lambda: run_reference("sklearn_ref.py", data_dir, args.epochs)
    epochs = {name: [] for name in contenders}
    rss = {name: [] for name in contenders}
    for r in range(args.rounds):  # alternate, so drift hits everyone alike
        for name, fn in contenders.items():
            if name == "scikit-learn" and r > 0:
                continue  # slow and stable: one round is enough
            seconds, peak = fn()
            epochs[name] += seconds
            rss[name].append(peak)
            print(f"round {r + 1}: {name:<36} epochs {', '.join(f'{s:.2f}' for s in seconds)} s,"
                  f" peak RSS {peak:.0f} MB", file=sys.stderr)
    use("numpy")  # the floor of the table: numpy's matmul, numpy's threads
    floor = matmul_floor(n_train)

    median = {name: statistics.median(v) for name, v in epochs.items()}
    refs = {}  # the fastest PyTorch variant of each precision measured in this run
    for precision in ("float32", "bfloat16"):
        names = [n for n in contenders if n.startswith("PyTorch") and precision in n]
        if names:
            refs[precision] = min(names, key=median.get)

    def ratio(name, precision):
        return f"{median[name] / median[refs[precision]]:.2f}" if precision in refs else "-"

    lines = ["| | median epoch (s) | samples/s | x PyTorch float32 | x PyTorch bfloat16 | "
             "x numpy matmul floor | peak RSS (MB) |", "|---|---|---|---|---|---|---|"]
    for name in contenders:
        label = name + (", a reference" if name in refs.values() else "")
        lines.append(f"| {label} | {median[name]:.3f} | {n_train / median[name]:,.0f} | "
                     f"{ratio(name, 'float32')} | {ratio(name, 'bfloat16')} | "
                     f"{median[name] / floor:.2f} | {max(rss[name]):.0f} |")
    lines.append(f"| numpy matmul floor | {floor:.3f} | {n_train / floor:,.0f} | - | - | 1.00 "
                 f"| - |")
    numpy_f32 = median["mnist-bp float32, numpy"]
    lines.append("")
    if "bfloat16" in precisions():
        lines.append(f"mnist-bp bfloat16 is {numpy_f32 / median['mnist-bp bfloat16']:.2f} x as "
                     f"fast as mnist-bp float32 by numpy")
    else:
        lines.append(NO_BF16)
    default = {"numpy": "numpy", "onednn": "oneDNN"}[use("auto")]
    lines.append(f"mnist-bp's float32 products by default on this CPU: {default}")
    if has_torch:
        plain = "PyTorch float32 (plain SGD)"
        for label in ("numpy", "oneDNN"):
            lines.append(f"mnist-bp float32 by {label}: "
                         f"{median[f'mnist-bp float32, {label}'] / median[plain]:.2f} x PyTorch "
                         f"float32's plain loop")
    lines += ["", *products_table(data_dir)]
    cached, parsed = load_seconds(data_dir)
    lines += ["",
              f"evaluate 10,000 test images (in-process, bench net): "
              f"{eval_seconds(data_dir):.3f} s",
              f"`mnist-bp --help` (whole process): {help_seconds():.3f} s",
              f"load cached Fashion-MNIST training set: {cached:.3f} s "
              f"(parsing the gzip IDX files: {parsed:.3f} s)"]
    print("\n".join(lines), flush=True)
    if args.part == "all" and "float32" in refs:
        variant = refs["float32"].split("(")[1].split()[0]
        print("\n" + scaling_table(data_dir, variant))


if __name__ == "__main__":
    from mnist_bp.errors import UserError

    try:
        main()
    except UserError as exc:  # e.g. Fashion-MNIST not imported yet: one line, not a traceback
        raise SystemExit(f"Error: {exc}") from None
