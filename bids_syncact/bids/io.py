"""Writing files whole or not at all (DESIGN.md section 5)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


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
    it is removed and ``path`` is left as it was.

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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
