"""What a node records of the threads it ran with (``threads.json`` in its folder)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def record_threads(cwd: Path, settings: Mapping[str, Any]) -> Path:
    """Write the thread settings in force in this node to ``cwd/threads.json``."""
    path = Path(cwd) / 'threads.json'
    path.write_text(json.dumps(dict(settings), sort_keys=True) + '\n')
    return path
