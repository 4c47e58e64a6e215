"""In-place `y += a * x` for the optimizers, as one pass of numpy's own BLAS.

numpy has no fused multiply-add: `y -= lr * v` costs two passes over memory and a temporary,
and the parameter updates were a quarter of a training step. BLAS `axpy` does it in one
multithreaded pass. It is called from the OpenBLAS that numpy itself ships (through ctypes),
never from a second BLAS: two OpenBLAS thread pools on two cores slow each other down several
times over. Where numpy's BLAS cannot be found (another build of numpy), the numpy
expression is used instead: same result, slower.
"""

from __future__ import annotations

import ctypes
import glob
import os

import numpy as np

# (symbol prefix, suffix, integer type) of the CBLAS names in known numpy wheel builds
_NAMINGS = [("scipy_cblas_", "64_", ctypes.c_int64), ("cblas_", "64_", ctypes.c_int64),
            ("scipy_cblas_", "", ctypes.c_int32), ("cblas_", "", ctypes.c_int32)]


def _find_axpy():
    libs = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs", "*openblas*.so*")
    for path in sorted(glob.glob(libs)):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix, integer in _NAMINGS:
            funcs = {}
            for kind, real in (("s", ctypes.c_float), ("d", ctypes.c_double)):
                fn = getattr(lib, f"{prefix}{kind}axpy{suffix}", None)
                if fn is None:
                    break
                fn.argtypes = [integer, real, ctypes.c_void_p, integer, ctypes.c_void_p, integer]
                fn.restype = None
                funcs[np.dtype(np.float32 if kind == "s" else np.float64)] = fn
            if len(funcs) == 2:
                return funcs
    return {}


_AXPY = _find_axpy()


def axpy(a: float, x: np.ndarray, y: np.ndarray) -> None:
    """y += a * x in place (x and y of one float dtype and shape)."""
    fn = _AXPY.get(y.dtype)
    if (fn is None or x.dtype != y.dtype or x.shape != y.shape or not x.flags.c_contiguous
            or not y.flags.c_contiguous or not y.flags.writeable):
        y += y.dtype.type(a) * x
        return
    fn(y.size, a, x.ctypes.data, 1, y.ctypes.data, 1)


def available() -> bool:
    return bool(_AXPY)
