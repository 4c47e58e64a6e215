"""oneDNN's GEMMs through ctypes, and the float32 -> bfloat16 conversion that feeds them.

The `onednn-cpu-gomp` wheel (the `fast` extra) ships `libdnnl.so.3`; its BLAS-like entry
points take row-major matrices, so numpy's C-ordered arrays go in as they are:

    dnnl_sgemm(transa, transb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)
    dnnl_gemm_bf16bf16f32(...)   # same, A and B bfloat16 (stored as uint16), C float32

`transa`/`transb` are the characters N or T, sizes int64; 0 means success. bfloat16 is the
top half of a float32; `to_bfloat16` rounds to nearest even with oneDNN's own reorder
primitive (one pass, compiled for the CPU): numpy's rounding expressions take five passes and
cost more than the products they feed.

Nothing is loaded until `library()` is called; every failure to load means "not available"
and the caller falls back to numpy.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from pathlib import Path

import numpy as np

_LIB = None
_TRIED = False
_ERROR: str | None = None  # why an installed oneDNN could not be used
_LOCK = threading.RLock()
_SIZE = ctypes.c_int64
_PTR = ctypes.c_void_p


def _candidates() -> list[Path]:
    """Where libdnnl.so.3 may be: $MNIST_BP_ONEDNN_LIB, the installed wheel's files."""
    paths = []
    if os.environ.get("MNIST_BP_ONEDNN_LIB"):
        paths.append(Path(os.environ["MNIST_BP_ONEDNN_LIB"]))
    try:
        from importlib import metadata

        dist = metadata.distribution("onednn-cpu-gomp")
        for f in dist.files or ():
            if f.name == "libdnnl.so.3":
                paths.append(Path(dist.locate_file(f)))
    except Exception:  # noqa: BLE001 - not installed, or odd metadata: not available
        pass
    return paths


def library():
    """The loaded oneDNN library with its functions typed, or None when it is not installed
    or cannot be used (then `load_error()` says why)."""
    global _LIB, _TRIED, _ERROR
    with _LOCK:
        if not _TRIED:
            for path in _candidates():
                try:
                    _LIB = _bind(ctypes.CDLL(str(path)))
                    break
                except (OSError, AttributeError) as exc:  # no file, no libgomp, not oneDNN 3
                    _ERROR = f"{path} could not be loaded ({exc})"
            _TRIED = True
        return _LIB


def load_error() -> str | None:
    return _ERROR


def _bind(lib):
    real, ref, i64p = ctypes.c_float, ctypes.POINTER(_PTR), ctypes.POINTER(ctypes.c_int64)
    gemm = [ctypes.c_char, ctypes.c_char, _SIZE, _SIZE, _SIZE, real, _PTR, _SIZE, _PTR, _SIZE,
            real, _PTR, _SIZE]
    for name, args in {
            "dnnl_sgemm": gemm, "dnnl_gemm_bf16bf16f32": gemm,
            "dnnl_engine_create": [ref, ctypes.c_int, ctypes.c_size_t],
            "dnnl_stream_create": [ref, _PTR, ctypes.c_uint],
            "dnnl_stream_wait": [_PTR],
            "dnnl_memory_desc_create_with_strides": [ref, ctypes.c_int, i64p, ctypes.c_int, i64p],
            "dnnl_memory_desc_destroy": [_PTR],
            "dnnl_reorder_primitive_desc_create": [ref, _PTR, _PTR, _PTR, _PTR, _PTR],
            "dnnl_primitive_desc_destroy": [_PTR],
            "dnnl_primitive_create": [ref, _PTR],
            "dnnl_primitive_destroy": [_PTR],
            "dnnl_memory_create": [ref, _PTR, _PTR, _PTR],
            "dnnl_memory_destroy": [_PTR],
            "dnnl_memory_set_data_handle": [_PTR, _PTR],
            "dnnl_primitive_execute": [_PTR, _PTR, ctypes.c_int, _PTR]}.items():
        fn = getattr(lib, name)  # AttributeError: not a oneDNN 3.x library
        fn.argtypes, fn.restype = args, ctypes.c_int
    return lib


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where it cannot be read).
    MNIST_BP_FAKE_CPU_FLAGS (space-separated) stands in for them: tests of other CPUs."""
    fake = os.environ.get("MNIST_BP_FAKE_CPU_FLAGS")
    return frozenset(fake.split()) if fake is not None else _proc_cpu_flags()


@functools.cache
def _proc_cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_bf16() -> bool:
    """Whether the CPU multiplies bfloat16 natively (AVX512_BF16 or AMX); without it oneDNN
    would emulate bfloat16 GEMM many times slower than float32."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def cpu_has_avx512() -> bool:
    """Whether oneDNN's float32 GEMM has AVX-512 kernels here (AVX512F, BW, VL and DQ, which
    oneDNN calls avx512_core). Without them its products are no faster than OpenBLAS's AVX2
    ones, and the training step is slower (docs/precision.md)."""
    return {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= cpu_flags()


class GemmError(RuntimeError):
    pass


def _check(status: int, what: str) -> None:
    if status != 0:
        raise GemmError(f"oneDNN {what} failed with status {status}")


def gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray, *, ta=False, tb=False,
         beta: float = 0.0) -> None:
    """out = op(a) op(b) + beta out, row-major; op transposes when ta/tb. Float32 inputs call
    sgemm, uint16 (bfloat16) inputs gemm_bf16bf16f32; `out` is float32. Every array must be
    C-contiguous and the shapes must agree: oneDNN reads and writes raw memory, so anything
    else is refused here rather than corrupting memory there."""
    m, k = (a.shape[1], a.shape[0]) if ta else a.shape
    kb, n = (b.shape[1], b.shape[0]) if tb else b.shape
    if not (a.dtype == b.dtype and a.dtype in (np.float32, np.uint16)
            and out.dtype == np.float32 and k == kb and out.shape == (m, n)
            and a.flags.c_contiguous and b.flags.c_contiguous and out.flags.c_contiguous
            and out.flags.writeable):
        raise ValueError(f"oneDNN GEMM: cannot multiply {a.dtype}{a.shape} and "
                         f"{b.dtype}{b.shape} into {out.dtype}{out.shape}")
    fn = _LIB.dnnl_sgemm if a.dtype == np.float32 else _LIB.dnnl_gemm_bf16bf16f32
    _check(fn(b"T" if ta else b"N", b"T" if tb else b"N", m, n, k, 1.0, a.ctypes.data,
              a.shape[1], b.ctypes.data, b.shape[1], beta, out.ctypes.data, n), "GEMM")


# the C API's constants (oneapi/dnnl/dnnl_common_types.h, dnnl_types.h)
_CPU_ENGINE, _IN_ORDER = 1, 1
_BF16, _F32 = 2, 3
_ARG_SRC, _ARG_DST = 1, 17


class _ExecArg(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_int), ("memory", _PTR)]


class _Reorders:
    """oneDNN reorder primitives from float32 to bfloat16, one per element count: oneDNN
    compiles each for the CPU (AVX512_BF16's conversion instruction where present) and runs
    it on the OpenMP threads its GEMMs use, so conversion and products take turns on the same
    cores instead of two thread pools fighting over them."""

    def __init__(self, lib):
        self.lib = lib
        self.engine, self.stream = _PTR(), _PTR()
        _check(lib.dnnl_engine_create(ctypes.byref(self.engine), _CPU_ENGINE, 0), "engine")
        _check(lib.dnnl_stream_create(ctypes.byref(self.stream), self.engine, _IN_ORDER),
               "stream")
        self.by_size: dict[int, tuple] = {}
        self.lock = threading.Lock()

    def _build(self, n: int) -> tuple:
        lib = self.lib
        dims, strides = (ctypes.c_int64 * 1)(n), (ctypes.c_int64 * 1)(1)
        src_md, dst_md = _PTR(), _PTR()
        _check(lib.dnnl_memory_desc_create_with_strides(ctypes.byref(src_md), 1, dims, _F32,
                                                        strides), "memory descriptor")
        _check(lib.dnnl_memory_desc_create_with_strides(ctypes.byref(dst_md), 1, dims, _BF16,
                                                        strides), "memory descriptor")
        pd, prim, src, dst = _PTR(), _PTR(), _PTR(), _PTR()
        _check(lib.dnnl_reorder_primitive_desc_create(ctypes.byref(pd), src_md, self.engine,
                                                      dst_md, self.engine, None), "reorder")
        _check(lib.dnnl_primitive_create(ctypes.byref(prim), pd), "reorder")
        _check(lib.dnnl_memory_create(ctypes.byref(src), src_md, self.engine, None), "memory")
        _check(lib.dnnl_memory_create(ctypes.byref(dst), dst_md, self.engine, None), "memory")
        lib.dnnl_primitive_desc_destroy(pd)
        for md in (src_md, dst_md):
            lib.dnnl_memory_desc_destroy(md)
        args = (_ExecArg * 2)(_ExecArg(_ARG_SRC, src), _ExecArg(_ARG_DST, dst))
        return prim, src, dst, args

    def __call__(self, src_address: int, dst_address: int, n: int) -> None:
        lib = self.lib
        with self.lock:  # one pair of memory objects per size: one caller at a time
            entry = self.by_size.get(n)
            if entry is None:
                if len(self.by_size) >= MAX_REORDERS:  # many sizes (tuning): start afresh
                    self.clear()
                entry = self.by_size[n] = self._build(n)
            prim, src, dst, args = entry
            _check(lib.dnnl_memory_set_data_handle(src, _PTR(src_address)), "memory")
            _check(lib.dnnl_memory_set_data_handle(dst, _PTR(dst_address)), "memory")
            _check(lib.dnnl_primitive_execute(prim, self.stream, 2, args), "reorder")
            _check(lib.dnnl_stream_wait(self.stream), "stream")

    def clear(self) -> None:
        for prim, src, dst, _ in self.by_size.values():
            self.lib.dnnl_primitive_destroy(prim)
            self.lib.dnnl_memory_destroy(src)
            self.lib.dnnl_memory_destroy(dst)
        self.by_size.clear()


_REORDERS = None
MAX_REORDERS = 64


def to_bfloat16(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """`out` (uint16, x's shape, C-contiguous) = x (float32, C-contiguous) rounded to
    bfloat16, nearest even (subnormals to signed zero, as the CPU's instruction does)."""
    global _REORDERS
    if not (x.dtype == np.float32 and out.dtype == np.uint16 and x.shape == out.shape
            and x.flags.c_contiguous and out.flags.c_contiguous and out.flags.writeable):
        raise ValueError(f"to_bfloat16: cannot convert {x.dtype}{x.shape} into "
                         f"{out.dtype}{out.shape}")
    with _LOCK:
        if _REORDERS is None:
            _REORDERS = _Reorders(library())
    if x.size:
        _REORDERS(x.ctypes.data, out.ctypes.data, x.size)
    return out


def from_bfloat16(x: np.ndarray) -> np.ndarray:
    """The float32 values of bfloat16 bits `x` (exact)."""
    return (x.astype(np.uint32) << 16).view(np.float32)
