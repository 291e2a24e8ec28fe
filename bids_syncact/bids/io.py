"""Writing files whole or not at all (DESIGN.md section 5)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: This host, as it appears in temporary file names (no dots: they separate the fields).
_HOST = re.sub(r'[^A-Za-z0-9_-]', '_', socket.gethostname()) or 'host'
_TEMPORARY = re.compile(r'^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)\.[^.]+\.tmp$')


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
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f'.{path.name}.{_HOST}-{os.getpid()}.', suffix='.tmp'
    )
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temporaries(root: Path) -> list[Path]:
    """Remove the temporary files of :func:`replacing` whose process died (SIGKILL, power loss).

    A temporary file names its host and process id; only files of this host whose process is
    gone are removed, so a job running at the same time on the same folder keeps its own.

    Parameters
    ----------
    root : Path
        Folder searched recursively (OUTPUT_DIR); a missing one holds nothing.

    Returns
    -------
    list of Path
        The files removed.
    """
    removed = []
    for tmp in Path(root).rglob('.*.tmp') if Path(root).is_dir() else ():
        match = _TEMPORARY.match(tmp.name)
        if match and match['host'] == _HOST and not _alive(int(match['pid'])):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


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
