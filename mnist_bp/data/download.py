"""Fetching the dataset files from mirrors.

Every file is streamed to `NAME.part`, resumed with an HTTP Range request after an
interruption, checked against its official checksum and only then renamed to its official
name: a failed or interrupted download never leaves a file under an official name. A lock
file serialises concurrent `download` processes on the same data dir.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

from mnist_bp import limits
from mnist_bp.data.registry import ROLES, DatasetSpec, FileSpec
from mnist_bp.errors import UserError
from mnist_bp.fsutil import fsync_dir, locked
from mnist_bp.progress import ProgressBar, human_bytes

DEFAULT_TIMEOUT = (10.0, 30.0)  # seconds: connect, read (between bytes)
DEFAULT_RETRIES = 2  # extra tries per mirror after a transient failure
CHUNK = 1 << 16
# A file whose size the registry does not know is still cut off here: no MNIST-format file
# of 10 classes comes near it.
MAX_UNKNOWN_SIZE = limits.DOWNLOAD_UNKNOWN_BYTES


class MirrorFailure(Exception):
    """One mirror failed for one file; `retry` says whether trying it again may help."""

    def __init__(self, message: str, retry: bool):
        super().__init__(message)
        self.retry = retry


def env_mirrors() -> list[str]:
    """Base URLs from $MNIST_BP_MIRROR (separated by commas or spaces)."""
    return [u for u in re.split(r"[,\s]+", os.environ.get("MNIST_BP_MIRROR", "")) if u]


def mirror_list(spec: DatasetSpec, extra=()) -> list[str]:
    """--mirror URLs, then $MNIST_BP_MIRROR, then the built-in list; duplicates dropped."""
    urls = []
    for url in [*extra, *env_mirrors(), *spec.mirrors]:
        url = url if url.endswith("/") else url + "/"
        if url not in urls:
            urls.append(url)
    return urls


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fetch_once(session, url: str, part: Path, timeout, show_progress: bool,
                limit: int = MAX_UNKNOWN_SIZE) -> None:
    """Stream `url` into `part` (resuming it), at most `limit` bytes in all: a mirror that
    sends more than the file can have is cut off (MirrorFailure, not retried)."""
    """Stream `url` into `part`, continuing a partial file with a Range request."""
    import requests
    import urllib3

    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with session.get(url, stream=True, timeout=timeout, headers=headers) as r:
            if r.status_code == 416:  # our partial file is no prefix of theirs: start over
                part.unlink(missing_ok=True)
                raise MirrorFailure("HTTP 416 for a resumed range", retry=True)
            if r.status_code >= 400:
                transient = r.status_code >= 500 or r.status_code in (408, 429)
                raise MirrorFailure(f"HTTP {r.status_code} {r.reason}", retry=transient)
            resumed = r.status_code == 206 and r.headers.get("Content-Range", "").startswith(
                f"bytes {offset}-")
            if not resumed:
                offset = 0  # the server ignored Range (or none was sent): write from scratch
            length = r.headers.get("Content-Length")
            total = offset + int(length) if length and length.isdigit() else None
            done = offset
            progress = ProgressBar(
                f"  {part.name[:-5]}", total,
                lambda n, t: f"{human_bytes(n)} {human_bytes((n - offset) / max(t, 1e-9))}/s",
                enabled=show_progress)
            # Read raw bytes (no Content-Encoding decoding) and let a short body end quietly:
            # every byte received is kept for the next Range request; the length is checked
            # below.
            r.raw.enforce_content_length = False
            with open(part, "ab" if resumed else "wb") as f:
                while chunk := r.raw.read(CHUNK, decode_content=False):
                    if done + len(chunk) > limit:
                        f.close()
                        part.unlink(missing_ok=True)
                        raise MirrorFailure(f"sent more than the file's {limit:,} bytes; cut "
                                            f"off", retry=False)
                    f.write(chunk)
                    done += len(chunk)
                    progress.update(done)
            if total is not None and done < total:
                raise MirrorFailure(f"transfer broke off after {done} of {total} bytes",
                                    retry=True)
            progress.close(done, " (resumed)" if resumed else "")
    except (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError) as exc:
        raise MirrorFailure(f"timed out ({type(exc).__name__})", retry=True) from None
    except requests.exceptions.ConnectionError as exc:
        raise MirrorFailure(f"connection failed ({_short(exc)})", retry=True) from None
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as exc:
        # the body was cut short or the connection broke: keep the part file.
        raise MirrorFailure(f"transfer broke off ({_short(exc)})", retry=True) from None


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) < 160 else text[:157] + "..."


def fetch_file(session, urls: list[str], spec: FileSpec, folder: Path, *, timeout, retries,
               backoff, show_progress=True, log=print) -> Path:
    """Fetch one file, trying each mirror in turn; returns its final path."""
    final = folder / spec.filename
    part = folder / (spec.filename + ".part")
    errors = []
    for base in urls:
        url = base + spec.filename
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(backoff * 2 ** (attempt - 1))
            try:
                _fetch_once(session, url, part, timeout, show_progress,
                            spec.size or MAX_UNKNOWN_SIZE)
            except MirrorFailure as exc:
                errors.append(f"{url}: {exc}")
                log(f"  {url}: {exc}" + ("; retrying" if exc.retry and attempt < retries else ""))
                if exc.retry:
                    continue
                break
            size = part.stat().st_size
            digest = file_digest(part, spec.algorithm)
            if digest == spec.checksum:
                os.replace(part, final)
                fsync_dir(folder)
                return final
            part.unlink()
            problem = (f"{spec.algorithm} mismatch ({size} bytes, {spec.algorithm} "
                       f"{digest[:12]}... expected {spec.checksum[:12]}...)")
            errors.append(f"{url}: {problem}")
            log(f"  {url}: {problem}; trying the next mirror")
            break
    last = errors[-1] if errors else "no mirror configured"
    raise UserError(f"could not download {spec.filename} from any of {len(urls)} mirror(s) "
                    f"(last: {last}); check the network or proxy, add a mirror with --mirror "
                    f"URL or $MNIST_BP_MIRROR, or import the files with `mnist-bp download "
                    f"--from DIR`")


def download_dataset(spec: DatasetSpec, data_dir: Path, *, mirrors=(), force=False,
                     timeout=DEFAULT_TIMEOUT, retries=DEFAULT_RETRIES, backoff=0.5,
                     show_progress=True, log=print) -> Path:
    """Make sure the four files of `spec` are in `data_dir/NAME/`, fetching what is missing."""
    import requests

    from mnist_bp.version import __version__

    folder = Path(data_dir) / spec.name
    urls = mirror_list(spec, mirrors)
    with locked(folder), requests.Session() as session:
        session.headers["User-Agent"] = f"mnist-bp/{__version__}"
        for role in ROLES:
            fspec = spec.files[role]
            if (folder / fspec.filename).is_file() and not force:
                log(f"  {fspec.filename}: present")
                continue
            path = fetch_file(session, urls, fspec, folder, timeout=timeout, retries=retries,
                              backoff=backoff, show_progress=show_progress, log=log)
            log(f"  {fspec.filename}: {fspec.algorithm} verified ({path.stat().st_size} bytes)")
    return folder
