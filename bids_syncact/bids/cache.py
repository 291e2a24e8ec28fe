"""The shared, subject-independent cache of stimulus features (DESIGN.md section 5).

``OUTPUT_DIR/features/stim-<sha8>_cnn-<c>_layer-<l>_hash-<h8>_desc-activations_timeseries.tsv``
(+ ``.json``): ``sha8`` from the stimulus file's sha256, ``h8`` from every setting that changes the
numbers. A feature set is computed once, under a file lock (so parallel participant jobs wait
instead of computing twice), written whole or not at all, and reused across subjects, reruns and
tasks that share a movie. On reuse the sidecar must match the settings: a mismatch is an error,
never a silent reuse.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from filelock import FileLock, Timeout

from bids_syncact.bids.io import atomic_write_json, atomic_write_text
from bids_syncact.errors import InputDataError, SyncActError

LOCK_TIMEOUT_S = 6 * 3600.0
_TIME_COLUMN = 'frame_time'
_BLANK_ROW = 'blank'


def bids_label(name: str) -> str:
    """Make an alphanumeric BIDS label of a module or model name (sidecars keep the original).

    >>> bids_label('features.11'), bids_label('layer4.1'), bids_label('resnet18')
    ('features11', 'layer41', 'resnet18')
    """
    label = re.sub(r'[^A-Za-z0-9]', '', name)
    if not label:
        raise ValueError(f'{name!r} has no letter or digit to make a BIDS label from')
    return label


def file_sha256(path: Path, block: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with Path(path).open('rb') as stream:
        while chunk := stream.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def settings_hash(settings: Mapping[str, Any]) -> str:
    """sha256 of the settings as canonical JSON (sorted keys)."""
    text = json.dumps(settings, sort_keys=True, separators=(',', ':'), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Features:
    """Activations of one layer over a stimulus: what the cache stores."""

    frame_times: np.ndarray
    """(n_frames,) seconds from the movie's start."""
    acts: np.ndarray
    """(n_frames, n_units) spatial means of the units' maps."""
    blank: np.ndarray
    """(n_units,) activations for a blank (mid-grey) screen."""
    unit_indices: tuple[int, ...]
    """Channel index of every column."""


class FeatureCache:
    """Feature sets under ``<output_dir>/features``, computed at most once each."""

    def __init__(self, output_dir: Path, *, lock_timeout_s: float = LOCK_TIMEOUT_S) -> None:
        self.folder = Path(output_dir) / 'features'
        self.lock_timeout_s = lock_timeout_s

    def path(
        self, stimulus_sha256: str, cnn: str, layer: str, settings: Mapping[str, Any]
    ) -> Path:
        """Where the feature set of these inputs lives (the ``.tsv``)."""
        name = (
            f'stim-{stimulus_sha256[:8]}_cnn-{bids_label(cnn)}_layer-{bids_label(layer)}'
            f'_hash-{settings_hash(settings)[:8]}_desc-activations_timeseries.tsv'
        )
        return self.folder / name

    def get_or_compute(
        self,
        stimulus: Path,
        cnn: str,
        layer: str,
        settings: Mapping[str, Any],
        compute: Callable[[], Features],
        *,
        stimulus_sha256: str | None = None,
    ) -> tuple[Features, Path]:
        """Load the feature set, computing and storing it first if no one has.

        Parameters
        ----------
        stimulus : Path
            The movie (its sha256 names the set).
        cnn, layer : str
            Original names (the labels in the file name are made from them).
        settings : mapping
            Every setting that changes the numbers (weights sha256, frame rate, frame fit,
            transforms, library versions); stored in the sidecar and hashed into the name.
        compute : callable
            Makes the features when they are not cached; called at most once per set.
        stimulus_sha256 : str, optional
            The stimulus file's sha256 when already known.

        Raises
        ------
        InputDataError
            A cached set whose sidecar disagrees with the settings (exit 65): remove it.
        SyncActError
            Waited longer than the lock timeout for another process computing the same set.
        """
        sha = stimulus_sha256 or file_sha256(stimulus)
        tsv = self.path(sha, cnn, layer, settings)
        sidecar = tsv.with_suffix('.json')
        expected = {'CNN': cnn, 'Layer': layer, 'StimulusSha256': sha, 'Settings': dict(settings)}
        if not tsv.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(tsv) + '.lock', timeout=self.lock_timeout_s)
            try:
                with lock:  # flock: released by the kernel if its holder dies (no stale lock)
                    if not tsv.exists():  # someone else may have finished while we waited
                        features = compute()
                        meta = {
                            'Description': f'Activations of {cnn} {layer} over {stimulus.name}',
                            'Sources': [str(stimulus)],
                            'UnitIndices': list(features.unit_indices),
                            **expected,
                        }  # fmt: skip
                        atomic_write_json(sidecar, _plain(meta))
                        atomic_write_text(tsv, _to_tsv(features))
            except Timeout:
                raise SyncActError(
                    f'waited {self.lock_timeout_s:.0f} s for another bids-syncact computing '
                    f'{tsv.name}: run --features-only once before the participant jobs'
                ) from None
        return self._load(tsv, sidecar, expected), tsv

    def _load(self, tsv: Path, sidecar: Path, expected: dict[str, Any]) -> Features:
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, ValueError) as err:
            raise InputDataError(
                f'cached features {tsv.name} have no readable sidecar ({err}): remove both files'
            ) from err
        stored = {key: meta.get(key) for key in expected}
        if stored != _plain(expected):
            different = sorted(k for k in expected if stored[k] != _plain(expected)[k])
            raise InputDataError(
                f'cached features {tsv.name} were made with other {", ".join(different)}: '
                f'remove {tsv} and its .json, they are not reused silently'
            )
        table = pd.read_csv(tsv, sep='\t', dtype={_TIME_COLUMN: str})
        blank_row = table[_TIME_COLUMN] == _BLANK_ROW
        values = table.drop(columns=_TIME_COLUMN).to_numpy(dtype=float)
        return Features(
            frame_times=table.loc[~blank_row, _TIME_COLUMN].astype(float).to_numpy(),
            acts=values[~blank_row.to_numpy()],
            blank=values[blank_row.to_numpy()][0],
            unit_indices=tuple(int(i) for i in meta['UnitIndices']),
        )


def _to_tsv(features: Features) -> str:
    columns = [f'unit{index:04d}' for index in features.unit_indices]
    table = pd.DataFrame(features.acts, columns=columns)
    table.insert(0, _TIME_COLUMN, [f'{t:.6f}' for t in features.frame_times])
    blank = pd.DataFrame([[_BLANK_ROW, *features.blank]], columns=table.columns)
    return pd.concat([blank, table]).to_csv(sep='\t', index=False, float_format='%.9g')


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))
