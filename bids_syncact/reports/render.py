"""What the reports share: reading the outputs with pybids, rendering, number formats."""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from bids_syncact import __version__
from bids_syncact.bids.derivatives import sidecar_path
from bids_syncact.bids.io import atomic_write_text

TEMPLATES = Path(__file__).resolve().parents[1] / 'data' / 'reports'


def sidecar(path: str | Path) -> dict[str, Any]:
    """Return the JSON sidecar of a data file, read."""
    return json.loads(sidecar_path(path).read_text())


def natural_key(text: str) -> tuple:
    """Sort key that orders numbers inside names by value (``features.4`` before ``.11``).

    >>> sorted(['features.11', 'features.4', 'features.1'], key=natural_key)
    ['features.1', 'features.4', 'features.11']
    """
    return tuple(int(part) if part.isdigit() else part for part in re.split(r'(\d+)', text))


def b64(png: bytes) -> str:
    """Return PNG bytes for a ``data:`` URI."""
    return base64.b64encode(png).decode('ascii')


def fmt(value: Any, digits: int = 3) -> str:
    """Format a number for a table: ``n/a`` for missing, scientific below 1e-3.

    >>> fmt(0.000012), fmt(12.3456), fmt(None), fmt(float('nan')), fmt(3)
    ('1.2e-05', '12.3', 'n/a', 'n/a', '3')
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 'n/a'
    if isinstance(value, int | bool):
        return str(value)
    value = float(value)
    if value != 0 and abs(value) < 1e-3:
        return f'{value:.2g}'
    return f'{value:.{digits}g}'


def render(template: str, path: Path, **context: Any) -> Path:
    """Render a template of ``data/reports`` to ``path`` (atomically)."""
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(['html']),
        trim_blocks=True, lstrip_blocks=True,
    )  # fmt: skip
    html = environment.get_template(template).render(version=__version__, **context)
    return atomic_write_text(path, html)
