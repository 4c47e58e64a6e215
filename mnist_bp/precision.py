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
from dataclasses import dataclass

from mnist_bp.errors import UserError
from mnist_bp.nn import onednn

GEMM_CHOICES = ("auto", "numpy", "onednn")
INSTALL = "pip install 'mnist-bp[fast]'"


@dataclass(frozen=True)
class Products:
    """Who multiplies, resolved once at the edge (`resolve`: mnist_bp.load, training.run)
    and handed down: `float32` is the nn.products.KINDS key of evaluation and float32
    training; `training(precision)` says what training in a precision uses."""

    choice: str  # MNIST_BP_GEMM: auto, numpy or onednn
    float32: str  # numpy or onednn
    onednn: bool  # oneDNN's library loads
    bf16: bool  # the CPU multiplies bfloat16 natively

    def training(self, precision: str) -> tuple[str, str | None]:
        """(products kind for nn.products.KINDS, a one-line note or None): bfloat16 where
        asked for and possible, else float32 with the reason."""
        if precision != "bfloat16":
            return self.float32, None
        if self.choice == "numpy" or not self.onednn:
            why = "MNIST_BP_GEMM=numpy" if self.choice == "numpy" else not_usable()
            return self.float32, (f"training.precision=bfloat16 needs oneDNN's GEMM, and "
                                  f"{why}: training in float32")
        if not self.bf16:
            return self.float32, ("this CPU has no native bfloat16 matrix products "
                                  "(AVX512_BF16 or AMX): training in float32")
        return "onednn-bfloat16", None


def resolve() -> Products:
    """Read MNIST_BP_GEMM and what the machine has, once per command or API call: the one
    place the switch is looked up. `onednn` where oneDNN is installed, not switched off, and
    (unless asked for by name) on a CPU with AVX-512, else `numpy`: without AVX-512 oneDNN's
    products are no faster than numpy's and the step around them is slower
    (docs/precision.md)."""
    choice = os.environ.get("MNIST_BP_GEMM", "auto").strip().lower() or "auto"
    if choice not in GEMM_CHOICES:
        raise UserError(f"MNIST_BP_GEMM={choice!r} is not one of {', '.join(GEMM_CHOICES)}; "
                        f"unset it for the default (oneDNN on CPUs with AVX-512, else numpy)")
    if choice == "numpy":
        return Products(choice, "numpy", False, False)
    loaded = onednn.library() is not None
    if not loaded:
        if choice == "onednn":
            raise UserError(f"MNIST_BP_GEMM=onednn but {not_usable()}; unset MNIST_BP_GEMM to "
                            f"multiply with numpy")
        return Products(choice, "numpy", False, False)
    use = choice == "onednn" or onednn.cpu_has_avx512()
    return Products(choice, "onednn" if use else "numpy", True, onednn.cpu_has_bf16())


def float32_products() -> str:
    """`resolve().float32`."""
    return resolve().float32


def training_products(precision: str) -> tuple[str, str | None]:
    """`resolve().training(precision)`."""
    return resolve().training(precision)


def not_usable() -> str:
    """Why oneDNN is not there, as the end of a sentence."""
    error = onednn.load_error()
    return f"oneDNN {error}" if error else f"oneDNN is not installed ({INSTALL})"


def pin_blas_threads(kind: str) -> None:
    """An explicit step of train and tune: with oneDNN multiplying, leave the cores to its
    OpenMP threads: numpy's OpenBLAS (still used for the optimizers' in-place updates) runs
    in the calling thread alone for the rest of the process. Two thread pools that spin while
    waiting slow each other down on two cores."""
    if kind != "numpy":
        from mnist_bp.nn import blas

        blas.set_threads(1)
