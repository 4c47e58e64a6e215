"""The run directory: every path inside a run, its lock, and "never replace a file this run
did not write".

    RUN/config.yaml               the resolved config (written first, before data is loaded)
    RUN/metrics.jsonl, .csv       one row per epoch
    RUN/checkpoints/last.npz      after every epoch (and mid-epoch on Ctrl-C)
    RUN/checkpoints/best.npz      the best epoch so far
    RUN/summary.json              at the end
    RUN/report/                   `mnist-bp report` (its own Owned folder)
    RUN/tensorboard/              `train --tensorboard`
    RUN/.train.lock               held by the one process writing the run
    RUN/.mnist-bp-files.json      what this run wrote: name -> (size, mtime, inode)

Every file a run (or a report) writes goes through `Owned.writing`: written to a temporary
name and renamed into place, and before that checked against the record of what this run
wrote. A file that is there and is not one this run wrote (a user's own `config.yaml`, notes,
a file changed since) is never replaced: one line names it. `train`, `report`, `serve`, the
Python API and `tune` (whose trials are runs) all find a run's files here.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

from mnist_bp.errors import UserError
from mnist_bp.fsutil import atomic_copy, atomic_write, held_by_one
from mnist_bp.limits import read_bounded

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"
LAST = f"{CHECKPOINTS}/last.npz"
BEST = f"{CHECKPOINTS}/best.npz"
REPORT = "report"
TENSORBOARD = "tensorboard"
LOCK = ".train.lock"
MANIFEST = ".mnist-bp-files.json"
RESULTS = (METRICS, SUMMARY, LAST, BEST)  # what marks a folder as holding a run
WRITTEN = (CONFIG, METRICS, METRICS_CSV, SUMMARY, LAST, BEST)  # what a run writes at its top


def _stamp(path: Path) -> list[int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


class Owned:
    """A folder whose files mnist-bp writes, with the record of what it wrote."""

    def __init__(self, folder: Path | str, fix: str = "move it away, or pass another folder"):
        self.folder = Path(folder)
        self.fix = fix
        self.written: list[str] = []  # names written by this object, in this process

    @property
    def record(self) -> dict[str, list[int]]:
        """What was written here, as the record on disk says now (several processes may
        write one folder: tune's workers share OUT)."""
        try:
            data = json.loads(read_bounded(self.folder / MANIFEST, 1 << 20, "record"))
            return {str(k): list(v) for k, v in data.items()} if isinstance(data, dict) else {}
        except (OSError, ValueError, TypeError, AttributeError, UserError):
            return {}

    def stamps(self, name: str) -> list[list[int]]:
        """The stamps recorded for `name`: one, or two while it is being replaced (the old
        file's and the new one's: a process killed between the record and the rename leaves
        either, and both are ours)."""
        value = self.record.get(name)
        if not isinstance(value, list):
            return []
        if len(value) == 3 and all(isinstance(v, int) for v in value):
            return [value]
        return [v for v in value if isinstance(v, list)]

    def ours(self, name: str) -> bool:
        """Whether `name` is absent, or exactly the file this folder's writer left there."""
        stamp = _stamp(self.folder / name)
        return stamp is None or stamp in self.stamps(name)

    def check(self, name: str) -> None:
        path = self.folder / name
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise UserError(f"{path}: is in the way (not a regular file) and was not written "
                            f"here; {self.fix}")
        if not self.ours(name):
            raise UserError(f"{path}: already exists and was not written by this run; it is "
                            f"left as it is; {self.fix}")

    def adopt(self, *names: str) -> None:
        """Record files already there as this folder's own (a run that was written before
        the record existed, a run being resumed)."""
        with self._locked():
            record = self.record
            for name in names:
                stamp = _stamp(self.folder / name)
                if stamp is not None:
                    record[name] = [stamp]
            self._save(record)

    @contextlib.contextmanager
    def _locked(self):
        """An exclusive lock on the folder itself (flock on its descriptor: no lock file)."""
        import fcntl

        fd = os.open(self.folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _save(self, record: dict) -> None:
        with atomic_write(self.folder / MANIFEST, "w") as f:
            json.dump(record, f)

    def _note(self, *names: str) -> None:
        record = self.record
        for name in names:
            record[name] = [_stamp(self.folder / name)]
            if name not in self.written:
                self.written.append(name)
        self._save(record)

    def _expect(self, name: str):
        """A hook for the moment before a new file takes `name`: its stamp is recorded beside
        the old one's (the rename keeps it), so a process killed at any moment leaves under
        `name` a file the record calls ours."""
        def record_new(tmp: Path) -> None:
            record = self.record
            record[name] = [*self.stamps(name)[-1:], _stamp(tmp)]
            self._save(record)
        return record_new

    @contextlib.contextmanager
    def writing(self, name: str, mode: str = "wb"):
        """A file object for `name`, replacing it atomically at the end: only if it is
        absent or ours (else UserError, and nothing is written)."""
        with self._locked():  # check, replace and record as one step
            self.check(name)
            with atomic_write(self.folder / name, mode, self._expect(name)) as f:
                yield f
            self._note(name)

    def link(self, source: str, name: str) -> None:
        """Make `name` the same bytes as `source` (a hard link where possible)."""
        with self._locked():
            self.check(name)
            atomic_copy(self.folder / source, self.folder / name, self._expect(name))
            self._note(name, source)


class RunDir(Owned):
    """One run's folder: its paths, its lock, and what the run wrote there."""

    def __init__(self, path: Path | str):
        super().__init__(path, "move it away, or pass another --run-dir")
        self.path = self.folder
        self.created: list[Path] = []  # folders this run made, outermost first
        self.made_files: list[str] = []  # the manifest and lock, where this run made them

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def checkpoint(self) -> Path:
        """`RUN/checkpoints/best.npz`: the best epoch (the last without validation)."""
        return self.path / BEST

    @property
    def last(self) -> Path:
        return self.path / LAST

    @property
    def lock_message(self) -> str:
        return (f"{self.path}: another mnist-bp train (process {{pid}}) is writing this run; "
                f"wait for it to finish or pass another --run-dir")

    def locked(self):
        """Held by the one process writing the run (the kernel lets go when it dies)."""
        self.make()
        self.made_files = [n for n in (MANIFEST, LOCK) if not (self.path / n).exists()]
        return held_by_one(self.path, LOCK, self.lock_message)

    def adopt_legacy(self) -> None:
        """A run written before runs kept a record (resumed now): its files are its own.
        A run with a record adopts nothing: a file it did not write stays refused."""
        if not (self.path / MANIFEST).exists():
            self.adopt(*WRITTEN)

    def make(self) -> None:
        """Create the folder, its missing parents and `checkpoints/`, remembering which
        folders this run made."""
        missing = []
        for folder in (self.path, *self.path.parents):
            if folder.exists() or folder.is_symlink():
                break
            missing.append(folder)
        for folder in reversed(missing):
            with contextlib.suppress(FileExistsError):
                folder.mkdir()
                self.created.append(folder)
        if not self.path.is_dir():
            raise UserError(f"{self.path}: is not a folder; pass another --run-dir")
        self.subfolder(CHECKPOINTS)

    def subfolder(self, name: str) -> Path:
        folder = self.path / name
        if folder.is_symlink():
            raise UserError(f"{folder}: a symbolic link, so this run's files would go "
                            f"elsewhere; it is left as it is; {self.fix}")
        if not folder.is_dir():
            folder.mkdir()
            self.created.append(folder)
        return folder

    def refuse_to_replace(self) -> None:
        """A new run writes into a folder holding no run and none of the files a run
        writes (a user's own config.yaml included)."""
        if any((self.path / name).exists() for name in RESULTS):
            raise UserError(f"{self.path}: already holds a run (its checkpoints and metrics "
                            f"would be replaced); continue it with `mnist-bp train --resume "
                            f"{self.path / LAST}`, or pass another --run-dir")
        for name in WRITTEN:
            if (self.path / name).exists() or (self.path / name).is_symlink():
                raise UserError(f"{self.path / name}: already exists and was not written by "
                                f"this run; it is left as it is; {self.fix}")

    def remove_unfinished(self) -> None:
        """Undo a run that stopped on an error before its first epoch: the files it wrote
        and the folders it made go; anything else in the folder stays."""
        for name in self.written:
            if self.ours(name):
                with contextlib.suppress(OSError):
                    os.unlink(self.path / name)
        if MANIFEST not in self.made_files and (self.path / MANIFEST).exists():
            with self._locked():  # another writer's record (a report's): ours out of it
                record = self.record
                for name in self.written:
                    record.pop(name, None)
                self._save(record)
        for name in self.made_files:
            with contextlib.suppress(OSError):
                os.unlink(self.path / name)
        for folder in reversed(self.created):  # innermost first
            if folder == self.path / TENSORBOARD:  # this run's event files, nothing else
                shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(OSError):  # only if empty
                folder.rmdir()


def run_name(checkpoint: Path | str) -> str:
    """A checkpoint's run name: RUN of RUN/checkpoints/best.npz, else the file's stem."""
    path = Path(checkpoint).resolve()
    return path.parent.parent.name if path.parent.name == CHECKPOINTS else path.stem


def run_of(checkpoint: Path | str) -> Path | None:
    """The run directory a checkpoint belongs to (RUN/checkpoints/NAME.npz with its
    config.yaml), or None."""
    path = Path(checkpoint).resolve()
    run = path.parent.parent
    if path.parent.name == CHECKPOINTS and path.name in ("last.npz", "best.npz") \
            and (run / CONFIG).is_file():
        return run
    return None
