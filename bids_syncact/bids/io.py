"""Writing files whole or not at all (DESIGN.md section 5)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import mmap
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

#: Suffix of the temporary files of :func:`replacing`.
_SUFFIX = '.syncact.tmp'


def atomic_write_text(path: Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode('utf-8'))


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    A reader never sees a half-written file, and an interrupted write leaves the old one intact.
    A file that already holds exactly ``data`` is left alone: its modification time stays, so
    a rerun's Nipype nodes downstream of it (hashed by timestamp) are not run again.

    Parameters
    ----------
    path : Path
        Destination; its folder is created when missing.
    data : bytes
        Content.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    if _holds(path, data):
        return path
    with replacing(path) as tmp, open(tmp, 'wb') as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())
    return path


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[str]:
    """Yield a temporary file name beside ``path``, moved onto ``path`` when the block succeeds.

    The file gets the permissions a plain ``open`` would give; on any error (Ctrl-C included)
    it is removed and ``path`` is left as it was. While the block runs, the temporary file is
    locked (``flock``), which tells :func:`remove_stale_temporaries` that its writer is alive.
    An error of the disk (full, read-only) names ``path``.

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / 'x.txt'
    >>> with replacing(target) as tmp:
    ...     _ = Path(tmp).write_text('whole')
    >>> target.read_text(), sorted(p.name for p in target.parent.iterdir())
    ('whole', ['x.txt'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix=_SUFFIX)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.filename is None:
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    finally:
        os.close(fd)


class PagedArray:
    """A read-only ``.npy`` file read in slices, its pages handed back as reading goes on.

    A memmap read chunk by chunk keeps every page it touched resident in the process (RSS)
    until it is closed: a 3.4 GB stacked BOLD read once becomes 3.4 GB of RSS in each node
    reading it. Each read here copies the slice out, and every ``resident_bytes`` of reads the
    kernel is advised that the mapping is no longer needed, so a node holds at most that much
    of the file (which stays in the page cache, shared and reclaimable). Supports what the
    solver asks of ``S``: ``shape``, ``ndim``, ``dtype``, ``len`` and ``[...]`` (slices or
    index arrays).
    """

    def __init__(self, path: str | Path, resident_bytes: int = 128 * 2**20) -> None:
        self._memmap = np.load(path, mmap_mode='r')
        self.shape, self.ndim = self._memmap.shape, self._memmap.ndim
        self.dtype = self._memmap.dtype
        self._resident_bytes, self._read_bytes = resident_bytes, 0

    def __len__(self) -> int:
        return len(self._memmap)

    def __getitem__(self, key: Any) -> np.ndarray:
        out = np.array(self._memmap[key])
        # Handed back after ``resident_bytes`` of reads, not after each: narrow chunks of
        # neighbouring columns share pages, which would otherwise be read again and again.
        self._read_bytes += out.nbytes
        if self._read_bytes >= self._resident_bytes:
            release_pages(self._memmap)
            self._read_bytes = 0
        return out


def release_pages(array: np.ndarray) -> None:
    """Hand back the pages a memmap holds (written ones reach the file first); else nothing."""
    mapped = getattr(array, '_mmap', None)
    if mapped is None:
        return
    if isinstance(array, np.memmap) and array.mode != 'r':
        array.flush()
    mapped.madvise(mmap.MADV_DONTNEED)


def allocate(path: str | Path) -> None:
    """Reserve the disk blocks of a file made sparse (a new memmap), or raise ENOSPC now.

    Writing through a memmap into a full disk kills the process (SIGBUS); reserving the
    blocks first turns that into an :class:`OSError` naming the file.
    """
    with open(path, 'r+b') as stream:
        size = os.fstat(stream.fileno()).st_size
        try:
            os.posix_fallocate(stream.fileno(), 0, size)
        except OSError as err:
            if err.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system without it
                return
            raise OSError(err.errno, err.strerror, str(path)) from err


def remove_stale_temporaries(root: Path, min_age_s: float = 60.0) -> list[Path]:
    """Remove the temporary files of :func:`replacing` whose writer died (SIGKILL, power loss).

    A writer holds a lock on its temporary file until it is moved into place; a file that can
    be locked, and is older than ``min_age_s`` (the moment between its creation and its lock),
    has no writer left. A job running at the same time on the same folder keeps its own,
    whatever host or container it runs in.

    Parameters
    ----------
    root : Path
        Folder searched recursively (OUTPUT_DIR); a missing one holds nothing.
    min_age_s : float
        Files modified more recently are left alone.

    Returns
    -------
    list of Path
        The files removed.
    """
    removed = []
    now = time.time()
    for tmp in Path(root).rglob(f'.*{_SUFFIX}') if Path(root).is_dir() else ():
        try:
            if now - tmp.stat().st_mtime < min_age_s:
                continue
            fd = os.open(tmp, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # locked: its writer is alive
        else:
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
        finally:
            os.close(fd)
    return removed


def _holds(path: Path, data: bytes) -> bool:
    try:
        if path.stat().st_size != len(data):
            return False
        return path.read_bytes() == data
    except OSError:
        return False


def atomic_write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically (see :func:`atomic_write_text`)."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + '\n')


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
