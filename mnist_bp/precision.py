"""Who does the matrix products, and in which precision (docs/config.md, `training.precision`).

oneDNN (the `fast` extra) multiplies by default where it is installed and the CPU has
AVX-512; `MNIST_BP_GEMM=numpy` selects numpy's own matmul (the reference the tests compare
against) and `MNIST_BP_GEMM=onednn` insists on oneDNN. `training.precision: bfloat16` rounds the
products' inputs to bfloat16 while training, on CPUs that multiply bfloat16 natively; where
that cannot be done, `training_products` says so in one line and training runs in float32
(never a silent emulation many times slower). Evaluation is float32 everywhere.
"""

from __future__ import annotations

import os

from mnist_bp.errors import UserError
from mnist_bp.nn import onednn

GEMM_CHOICES = ("auto", "numpy", "onednn")
INSTALL = "pip install 'mnist-bp[fast]'"


def gemm_choice() -> str:
    choice = os.environ.get("MNIST_BP_GEMM", "auto").strip().lower() or "auto"
    if choice not in GEMM_CHOICES:
        raise UserError(f"MNIST_BP_GEMM={choice!r} is not one of {', '.join(GEMM_CHOICES)}; "
                        f"unset it for the default (oneDNN on CPUs with AVX-512, else numpy)")
    return choice


def float32_products() -> str:
    """`onednn` where oneDNN is installed, not switched off, and (unless asked for by name) on
    a CPU with AVX-512, else `numpy`. Without AVX-512 oneDNN's products are no faster than
    numpy's and the step around them is slower (docs/precision.md)."""
    choice = gemm_choice()
    if choice == "numpy":
        return "numpy"
    if onednn.library() is None:
        if choice == "onednn":
            raise UserError(f"MNIST_BP_GEMM=onednn but {not_usable()}; unset MNIST_BP_GEMM to "
                            f"multiply with numpy")
        return "numpy"
    if choice == "auto" and not onednn.cpu_has_avx512():
        return "numpy"
    return "onednn"


def not_usable() -> str:
    """Why oneDNN is not there, as the end of a sentence."""
    error = onednn.load_error()
    return f"oneDNN {error}" if error else f"oneDNN is not installed ({INSTALL})"


def training_products(precision: str) -> tuple[str, str | None]:
    """(products kind for nn.products.KINDS, a one-line note or None) for training. With
    oneDNN, numpy's OpenBLAS is left one thread for the rest of the process (see
    `use_one_blas_thread`): training is the whole of a train or tune process."""
    kind, note = float32_products(), None
    if precision == "bfloat16":
        if gemm_choice() == "numpy" or onednn.library() is None:
            why = "MNIST_BP_GEMM=numpy" if gemm_choice() == "numpy" else not_usable()
            note = f"training.precision=bfloat16 needs oneDNN's GEMM, and {why}: " \
                   f"training in float32"
        elif not onednn.cpu_has_bf16():
            note = "this CPU has no native bfloat16 matrix products (AVX512_BF16 or AMX): " \
                   "training in float32"
        else:
            kind = "onednn-bfloat16"
    if kind != "numpy":
        use_one_blas_thread()
    return kind, note


def use_one_blas_thread() -> None:
    """Leave the cores to oneDNN's OpenMP threads: numpy's OpenBLAS (still used for the
    optimizers' in-place updates) runs in the calling thread alone. Two thread pools that
    spin while waiting slow each other down on two cores."""
    from mnist_bp.nn import blas

    blas.set_threads(1)
