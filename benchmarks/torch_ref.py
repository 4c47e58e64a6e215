"""PyTorch reference for the benchmark workload: the plainest fast loop.

The whole training set preloaded as one float32 tensor (read from the gzip IDX files with
numpy, as a standalone script would); nn.Sequential(Linear, ReLU, Linear, ReLU, Linear);
CrossEntropyLoss; SGD(lr=0.05, momentum=0.9); batches of 128 indexed from torch.randperm;
zero_grad(set_to_none=True); torch's default threads. `--optimizer` picks SGD's
implementation: `plain` (the per-parameter loop, the default on CPU), `foreach` or `fused`
(one kernel for all parameters); bench.py runs the variants and takes the fastest as the
reference. `--precision bfloat16` wraps the forward pass and the loss in
`torch.autocast("cpu", dtype=torch.bfloat16)`, PyTorch's one-line mixed precision (bfloat16
matmuls through oneDNN, float32 weights and optimizer). Prints one JSON line with the
training-loop seconds of each epoch. `--hidden` and `--batch` change the widths of the two
hidden layers and the batch size.

    python benchmarks/torch_ref.py --data-dir D --epochs 3 [--optimizer fused] [--hidden 512]
                                   [--precision bfloat16]
"""

import time

import torch
from torch import nn

from common import report, training_set

IMPLEMENTATIONS = {"plain": {"foreach": False}, "foreach": {"foreach": True},
                   "fused": {"fused": True}}


def main():
    def extra(ap):
        ap.add_argument("--optimizer", choices=sorted(IMPLEMENTATIONS), default="plain")
        ap.add_argument("--precision", choices=("float32", "bfloat16"), default="float32")

    args, x, y = training_set(__doc__.splitlines()[0], extra)
    h, batch = args.hidden, args.batch
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(),
                          nn.Linear(h, 10))
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9,
                          **IMPLEMENTATIONS[args.optimizer])
    autocast = args.precision == "bfloat16"
    seconds = []
    for _ in range(args.epochs):
        start = time.perf_counter()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        seconds.append(time.perf_counter() - start)
    report(seconds, threads=torch.get_num_threads(), final_loss=loss.item(),
           optimizer=args.optimizer, precision=args.precision)


if __name__ == "__main__":
    main()
