"""Atomic file writes: a temporary file in the same folder, fsync, then rename into place.

A process killed at any moment leaves either the old file or the new one under the final
name, never half of one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "wb", before_replace=None):
    """Yield a file object; on success it replaces `path` atomically, on error it vanishes.
    `before_replace(tmp)` runs on the complete temporary file just before the rename (the
    rename keeps its inode, size and time: rundir records them there)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:100]}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_copy(src: Path, dst: Path, before_replace=None) -> None:
    """Make `dst` a copy of `src`, atomically: a hard link where the file system has them (no
    bytes written; replacing `src` later, itself atomically, leaves `dst` as it was), else a
    copy of the bytes. `before_replace` as for `atomic_write`."""
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(f".{dst.name}.link.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    try:
        os.link(src, tmp)
    except OSError:
        with atomic_write(dst, before_replace=before_replace) as f, open(src, "rb") as source:
            shutil.copyfileobj(source, f)
        return
    if before_replace is not None:
        before_replace(tmp)
    os.replace(tmp, dst)
    fsync_dir(dst.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def locked(folder: Path, name: str = ".lock"):
    """Hold an exclusive advisory lock on `folder/name` (serialises concurrent processes)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / name, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def held_by_one(folder: Path, name: str, busy: str):
    """Hold `folder/name` exclusively for as long as the block runs, or raise UserError(`busy`,
    with `{pid}` filled in by the holder's process id) at once if another process holds it.
    The kernel releases the lock when its process dies, so a killed holder blocks nobody."""
    import stat

    from mnist_bp.errors import UserError

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    try:  # never through a symbolic link, never a file with other names (a hard link)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as exc:
        raise UserError(f"{path}: cannot use it as the run's lock ({exc.strerror}: a symbolic "
                        f"link?); move it away") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or info.st_size > 64:
        os.close(fd)
        raise UserError(f"{path}: is not a lock file of mnist-bp (a link to another file, "
                        f"or a file of someone's); it is left as it is; move it away")
    with os.fdopen(fd, "r+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid = f.read().strip() or "?"
            raise UserError(busy.format(pid=pid)) from None
        try:
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def cut_name(stem: str, limit: int = 200) -> str:
    """`stem` cut to at most `limit` bytes as the file system stores it (a file name has 255:
    room is left for `~N` and a suffix), never inside a character."""
    encoded = os.fsencode(stem)
    if len(encoded) <= limit:
        return stem
    cut = encoded[:limit]
    while cut and cut[-1] & 0xC0 == 0x80:  # UTF-8 continuation bytes: back to a character
        cut = cut[:-1]
    if cut and cut[-1] >= 0xC0:  # a lead byte whose continuation was cut off
        cut = cut[:-1]
    return os.fsdecode(cut)


def write_new(folder: Path, stem: str, suffix: str, data: bytes) -> Path:
    """Write `data` to `folder/stem+suffix`, or `stem~2+suffix`, `stem~3`... whichever name is
    free: never replaces an existing file. The bytes go to a temporary file first and are then
    hard-linked under the free name (which fails instead of overwriting), so no half-written
    file ever carries the name."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = cut_name(stem)  # with `~N` and the suffix, inside any file system's 255 bytes
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".saving.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        k = 1
        while True:
            path = folder / (f"{stem}{suffix}" if k == 1 else f"{stem}~{k}{suffix}")
            try:
                os.link(tmp, path)
                return path
            except FileExistsError:
                k += 1
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
