"""Layer presets of the CNN families (``bids_syncact/data/layer_presets.json``), without torch.

Read by the command line to refuse an unknown ``--cnn`` before anything heavy is imported.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from bids_syncact.errors import UsageError


@cache
def presets() -> Mapping[str, Mapping[str, Any]]:
    """Return the presets by CNN name (``layers``, ``kind``, optional ``relu_after``)."""
    text = resources.files('bids_syncact.data').joinpath('layer_presets.json').read_text()
    return json.loads(text)['cnns']


def cnn_names() -> tuple[str, ...]:
    """Names of the CNNs with a layer preset, sorted.

    >>> 'alexnet' in cnn_names() and 'resnet18' in cnn_names()
    True
    """
    return tuple(sorted(presets()))


def check_cnn(cnn: str) -> None:
    """Refuse (exit 64) a CNN without a layer preset, listing the valid names."""
    if cnn not in presets():
        raise UsageError(
            f'--cnn {cnn!r} is not a CNN with a layer preset: use one of {", ".join(cnn_names())}'
        )
