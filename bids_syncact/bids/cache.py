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
from collections.abc import Callable, Mapping, Sequence
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

    def lock_path(self, stimulus_sha256: str, cnn: str, settings: Mapping[str, Any]) -> Path:
        """Return the lock held while one process computes the layers of a stimulus and CNN."""
        return self.folder / (
            f'stim-{stimulus_sha256[:8]}_cnn-{bids_label(cnn)}'
            f'_hash-{settings_hash(settings)[:8]}.lock'
        )

    def get_or_compute(
        self,
        stimulus: Path,
        cnn: str,
        layers: Sequence[str],
        settings: Mapping[str, Any],
        compute: Callable[[], Mapping[str, Features]],
        *,
        stimulus_sha256: str | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> dict[str, tuple[Features, Path]]:
        """Load the feature sets of ``layers``, computing and storing them first if no one has.

        Parameters
        ----------
        stimulus : Path
            The movie, clip or image (its sha256 names the sets).
        cnn : str
            Original name (the label in the file name is made from it).
        layers : sequence of str
            Original module names; one forward pass computes them all.
        settings : mapping
            Every setting that changes the numbers (weights sha256, frame rate, frame fit,
            transforms, library versions); stored in the sidecars and hashed into the names.
        compute : callable
            Makes ``{layer: Features}`` when any layer is missing; called at most once per
            stimulus, CNN and settings, however many processes ask at the same time.
        stimulus_sha256 : str, optional
            The stimulus file's sha256 when already known.
        provenance : mapping, optional
            How the sets were made (device, threads), read after ``compute`` and written to the
            sidecars under ``Provenance``; never compared on reuse.

        Returns
        -------
        dict
            ``{layer: (features, tsv_path)}``.

        Raises
        ------
        InputDataError
            A cached set whose sidecar disagrees with the settings (exit 65): remove it.
        SyncActError
            Waited longer than the lock timeout for another process computing the same sets.
        """
        sha = stimulus_sha256 or file_sha256(stimulus)
        tsvs = {layer: self.path(sha, cnn, layer, settings) for layer in layers}
        expected = {
            layer: {'CNN': cnn, 'Layer': layer, 'StimulusSha256': sha, 'Settings': dict(settings)}
            for layer in layers
        }
        if not all(tsv.exists() for tsv in tsvs.values()):
            self.folder.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(self.lock_path(sha, cnn, settings)), timeout=self.lock_timeout_s)
            try:
                with lock:  # flock: released by the kernel if its holder dies (no stale lock)
                    missing = [layer for layer, tsv in tsvs.items() if not tsv.exists()]
                    if missing:  # someone else may have finished while we waited
                        computed = compute()
                        for layer in missing:
                            meta = expected[layer] | {'Provenance': dict(provenance or {})}
                            self._store(stimulus, tsvs[layer], meta, computed[layer])
            except Timeout:
                raise SyncActError(
                    f'waited {self.lock_timeout_s:.0f} s for another bids-syncact computing the '
                    f'features of {stimulus.name}: run --features-only once before the '
                    'participant jobs'
                ) from None
        return {layer: (self._load(tsvs[layer], expected[layer]), tsvs[layer]) for layer in layers}

    @staticmethod
    def _store(stimulus: Path, tsv: Path, expected: dict[str, Any], features: Features) -> None:
        meta = {
            'Description': (
                f'Activations of {expected["CNN"]} {expected["Layer"]} over {stimulus.name}: '
                'spatial mean of each channel per sampled frame; the first row is a blank '
                '(mid-grey) screen'
            ),
            'Sources': [str(stimulus)],
            'UnitIndices': list(features.unit_indices),
            **expected,
        }
        atomic_write_json(tsv.with_suffix('.json'), _plain(meta))  # the sidecar first,
        atomic_write_text(tsv, _to_tsv(features))  # the data last: it marks the set complete

    @staticmethod
    def _load(tsv: Path, expected: dict[str, Any]) -> Features:
        sidecar = tsv.with_suffix('.json')
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


def read_features(tsv: Path) -> tuple[dict[str, Any], Features]:
    """Read a cached feature set and its sidecar (e.g. one a worker just made)."""
    meta = json.loads(tsv.with_suffix('.json').read_text())
    expected = {key: meta.get(key) for key in ('CNN', 'Layer', 'StimulusSha256', 'Settings')}
    return meta, FeatureCache._load(tsv, expected)


def _to_tsv(features: Features) -> str:
    columns = [f'unit{index:04d}' for index in features.unit_indices]
    table = pd.DataFrame(features.acts, columns=columns)
    table.insert(0, _TIME_COLUMN, [f'{t:.6f}' for t in features.frame_times])
    blank = pd.DataFrame([[_BLANK_ROW, *features.blank]], columns=table.columns)
    return pd.concat([blank, table]).to_csv(sep='\t', index=False, float_format='%.9g')


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))
