"""In-place updates for the optimizers, each one pass of numpy's own BLAS.

numpy has no fused multiply-add: `y -= lr * v` costs two passes over memory and a temporary,
and `v = mu * v + g` two more, while the parameter updates were a quarter of a training step.
BLAS `axpy` (y += a x) and `axpby` (y = a x + b y) do each in one multithreaded pass, and
`gemm` can add a matrix product into a scaled buffer (momentum, see optimizers.py). They are
called from the OpenBLAS that numpy itself ships (through ctypes), never from a second BLAS:
two OpenBLAS thread pools on two cores slow each other down several times over. Where numpy's
BLAS cannot be found (another build of numpy), the numpy expressions are used instead: the
same results up to rounding, slower.
"""

from __future__ import annotations

import ctypes
import glob
import os
import weakref

import numpy as np

# (symbol prefix, suffix, integer type) of the CBLAS names in known numpy wheel builds
_NAMINGS = [("scipy_cblas_", "64_", ctypes.c_int64), ("cblas_", "64_", ctypes.c_int64),
            ("scipy_cblas_", "", ctypes.c_int32), ("cblas_", "", ctypes.c_int32)]
_PTR = ctypes.c_void_p


def _bind(lib, prefix, suffix, integer):
    """{dtype: (axpy, axpby, gemm)} from `lib` under one naming, or None."""
    found = {}
    for kind, real, dtype in (("s", ctypes.c_float, np.float32),
                              ("d", ctypes.c_double, np.float64)):
        axpy = getattr(lib, f"{prefix}{kind}axpy{suffix}", None)
        axpby = getattr(lib, f"{prefix}{kind}axpby{suffix}", None)
        gemm = getattr(lib, f"{prefix}{kind}gemm{suffix}", None)
        if axpy is None or axpby is None or gemm is None:
            return None
        axpy.argtypes = [integer, real, _PTR, integer, _PTR, integer]
        axpby.argtypes = [integer, real, _PTR, integer, real, _PTR, integer]
        order = ctypes.c_int  # CBLAS enums
        gemm.argtypes = [order, order, order, integer, integer, integer, real, _PTR, integer,
                         _PTR, integer, real, _PTR, integer]
        axpy.restype = axpby.restype = gemm.restype = None
        found[np.dtype(dtype)] = (axpy, axpby, gemm)
    return found


def _openblas_libraries():
    """numpy's bundled OpenBLAS, loaded (each file that loads, in name order)."""
    pattern = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs", "*openblas*.so*")
    for path in sorted(glob.glob(pattern)):
        try:
            yield ctypes.CDLL(path)
        except OSError:
            continue


def _find() -> dict:
    for lib in _openblas_libraries():
        for naming in _NAMINGS:
            found = _bind(lib, *naming)
            if found:
                return found
    return {}


_FUNCS = _find()


_ADDRESSES: dict[int, tuple[weakref.ref, int]] = {}


def _address(a: np.ndarray) -> int:
    """The address of `a`'s data. `a.ctypes.data` is slow next to a small BLAS call; the
    buffers passed here live as long as the layers, so their addresses are remembered,
    under a weak reference (a dead array's id may be reused; nothing is kept
    alive)."""
    entry = _ADDRESSES.get(id(a))
    if entry is not None and entry[0]() is a:
        return entry[1]
    if len(_ADDRESSES) > 1024:  # arrays that come and go (other callers): start afresh
        _ADDRESSES.clear()
    address = a.ctypes.data
    _ADDRESSES[id(a)] = (weakref.ref(a), address)
    return address


def _usable(x: np.ndarray, y: np.ndarray) -> bool:
    return (y.dtype in _FUNCS and x.dtype == y.dtype and x.shape == y.shape
            and x.flags.c_contiguous and y.flags.c_contiguous and y.flags.writeable)


def axpy(a: float, x: np.ndarray, y: np.ndarray) -> None:
    """y += a * x, in place."""
    if _usable(x, y):
        _FUNCS[y.dtype][0](y.size, a, _address(x), 1, _address(y), 1)
    else:
        y += y.dtype.type(a) * x


def axpby(a: float, x: np.ndarray, b: float, y: np.ndarray) -> None:
    """y = a * x + b * y, in place."""
    if _usable(x, y):
        _FUNCS[y.dtype][1](y.size, a, _address(x), 1, b, _address(y), 1)
    else:
        y *= y.dtype.type(b)
        y += y.dtype.type(a) * x


_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


def gemm_tn(x: np.ndarray, g: np.ndarray, beta: float, c: np.ndarray) -> None:
    """c = x^T g + beta c, in place: `x` `(N, D_in)`, `g` `(N, D_out)`, `c` `(D_in, D_out)`.

    The matrix product adds into `c` for free, which numpy's matmul cannot do."""
    usable = (c.dtype in _FUNCS and x.dtype == g.dtype == c.dtype and c.flags.writeable
              and all(a.flags.c_contiguous for a in (x, g, c)))
    if not usable:
        c *= c.dtype.type(beta)
        c += x.T @ g
        return
    n, d_in = x.shape
    d_out = g.shape[1]
    _FUNCS[c.dtype][2](_ROW_MAJOR, _TRANS, _NO_TRANS, d_in, d_out, n, 1.0, _address(x), d_in,
                       _address(g), d_out, beta, _address(c), d_out)



def _thread_setter():
    for lib in _openblas_libraries():
        for name in ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_",
                     "openblas_set_num_threads"):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.argtypes, fn.restype = [ctypes.c_int], None
                return fn
    return None


_SET_THREADS = _thread_setter()


def set_threads(n: int) -> bool:
    """Run numpy's OpenBLAS on `n` threads; False where its BLAS cannot be found."""
    if _SET_THREADS is None:
        return False
    _SET_THREADS(n)
    return True
