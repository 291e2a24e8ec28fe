"""Stimulus features through the shared cache (DESIGN.md sections 2.1 and 5).

:func:`prepare_cnn` runs in the parent process before any job starts: it checks the CNN and layer
names on a shape-only model, finds (or downloads) the weights and hashes them, so bad names and
missing weights are refused in one line at once. :func:`stimulus_features` runs in a worker: it
decodes the stimulus in a background thread and forwards the frames, unless the cache already has
them. Both only ever touch CUDA in the worker, never in the parent (``fork`` after CUDA breaks).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from bids_syncact.bids.cache import FeatureCache, Features, file_sha256
from bids_syncact.config import CNNConfig, StimulusConfig
from bids_syncact.core import cnn as cnns
from bids_syncact.core.video import BLANK_LEVEL, RESAMPLER, FrameFit
from bids_syncact.errors import InputDataError, UsageError

LOGGER = logging.getLogger('bids_syncact.features')
#: Bump when this app's own frame handling (sampling, fit, pooling) changes the numbers, so that
#: feature sets made by an older version are not reused.
FEATURE_REVISION = 1


@dataclass(frozen=True)
class PreparedCNN:
    """A CNN checked in the parent: layers, weights and the settings that name its features."""

    cnn: str
    layers: tuple[str, ...]
    n_units: Mapping[str, int]
    """Channels of each layer."""
    weights: cnns.Weights
    weights_sha256: str | None
    settings: Mapping[str, Any]
    """Every setting that changes the numbers: hashed into the cache names."""

    @property
    def weights_description(self) -> dict[str, Any]:
        """``Weights`` of the sidecars."""
        return weights_description(self.weights, self.weights_sha256)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, to cross a process boundary (a Nipype input)."""
        weights = dataclasses.asdict(self.weights)
        weights['path'] = None if self.weights.path is None else str(self.weights.path)
        return {
            'cnn': self.cnn, 'layers': list(self.layers), 'n_units': dict(self.n_units),
            'weights': weights, 'weights_sha256': self.weights_sha256,
            'settings': json.loads(json.dumps(self.settings)),
        }  # fmt: skip

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PreparedCNN:
        """Inverse of :meth:`to_dict`."""
        weights = dict(values['weights'])
        weights['path'] = None if weights['path'] is None else Path(weights['path'])
        return cls(
            cnn=values['cnn'], layers=tuple(values['layers']), n_units=dict(values['n_units']),
            weights=cnns.Weights(**weights), weights_sha256=values['weights_sha256'],
            settings=dict(values['settings']),
        )  # fmt: skip


def weights_description(weights: cnns.Weights, sha256: str | None) -> dict[str, Any]:
    """Return what the sidecars say about the weights (random ones are flagged)."""
    described: dict[str, Any] = {'Kind': weights.kind, 'Name': weights.name}
    if weights.path is not None:
        described |= {'File': str(weights.path), 'Sha256': sha256}
    if weights.random:
        described |= {
            'Seed': weights.seed,
            'Warning': 'RANDOM weights (--weights none): for tests only, not a trained network',
        }
    return described


def layers_of(cnn: str, layers: Sequence[tuple[str | None, str]]) -> tuple[str, ...]:
    """Return the layers ``--layers`` names for ``cnn`` (unscoped ones: every CNN), or its preset.

    >>> layers_of('alexnet', [(None, 'features.4'), ('resnet18', 'layer1')])
    ('features.4',)
    >>> layers_of('alexnet', [('resnet18', 'layer1')])[:2]
    ('features.1', 'features.4')
    """
    chosen = [layer for scope, layer in layers if scope in (None, cnn)]
    return tuple(dict.fromkeys(chosen)) or cnns.preset_layers(cnn)


def weights_of(cnn: str, weights: Sequence[tuple[str | None, str]]) -> str:
    """Return the ``--weights`` value for ``cnn``: its own, else an unscoped one, else DEFAULT.

    >>> weights_of('alexnet', [(None, 'none'), ('alexnet', '/w.pth')]), weights_of('vgg16', [])
    ('/w.pth', 'DEFAULT')
    """
    values = dict(weights)
    return values.get(cnn, values.get(None, 'DEFAULT'))


def prepare_cnn(
    cnn: str, cnn_config: CNNConfig, stimulus: StimulusConfig, *, seed: int
) -> PreparedCNN:
    """Check a CNN's names and weights in the parent and fix its feature settings.

    Raises
    ------
    UsageError
        Unknown CNN or layer names (exit 64), with the valid ones.
    MissingInputError
        DEFAULT weights absent offline, or no such weights file (exit 66).
    InputDataError
        A weights file that is not a state_dict of this CNN (exit 65).
    """
    cnns.check_cnn(cnn)
    scoped = {scope for scope, _ in (*cnn_config.layers, *cnn_config.weights) if scope}
    unknown = scoped - set(cnn_config.cnn)
    if unknown:
        raise UsageError(
            f'--layers/--weights name {", ".join(sorted(unknown))}, which --cnn does not run: '
            f'add it to --cnn or drop the prefix'
        )
    norm = cnns.normalisation(cnn)
    layers = layers_of(cnn, cnn_config.layers)
    n_units = cnns.shape_check(cnn, layers, norm.crop_size)
    weights = cnns.resolve_weights(cnn, weights_of(cnn, cnn_config.weights), seed=seed)
    sha = file_sha256(weights.path) if weights.path is not None else None
    settings = feature_settings(cnn, weights, sha, stimulus, norm)
    return PreparedCNN(cnn, layers, n_units, weights, sha, settings)


def feature_settings(
    cnn: str,
    weights: cnns.Weights,
    weights_sha256: str | None,
    stimulus: StimulusConfig,
    norm: cnns.Normalisation,
) -> dict[str, Any]:
    """Every setting that changes the feature numbers (hashed into the cache file names)."""
    import torch
    import torchvision

    return {
        'FeatureRevision': FEATURE_REVISION,
        'Weights': weights_description(weights, weights_sha256) | {'File': None},
        'FrameRate': stimulus.frame_rate,
        'FrameFit': stimulus.frame_fit,
        'InputSize': norm.crop_size,
        'ResizeSize': norm.resize_size,
        'Normalisation': {'From': norm.weights_enum, 'Mean': norm.mean, 'Std': norm.std},
        'Resampler': f'FFmpeg swscale {RESAMPLER}',
        'BlankLevel': BLANK_LEVEL,
        'Pooling': 'spatial mean per channel',
        'FunctionalReLU': sorted(cnns.relu_after(cnn)),
        'Versions': {
            'torch': torch.__version__,
            'torchvision': torchvision.__version__,
            'av': av.__version__,
        },
    }


def stimulus_features(
    prepared: PreparedCNN,
    stimulus: Path,
    *,
    output_dir: Path,
    frame_rate: float | str,
    frame_fit: str,
    device: str = 'auto',
    stimulus_sha256: str | None = None,
    duration_s: float | None = None,
    progress: bool | None = None,
) -> dict[str, tuple[Features, Path]]:
    """Features of every layer of ``prepared`` over one stimulus file, from the cache.

    Computed (one decode, one forward pass per batch for all layers) only when not cached.

    Returns
    -------
    dict
        ``{layer: (features, tsv_path)}``; features keep every channel (units are chosen per
        subject, over all the stimuli of a task, when synchronizing).
    """
    cache = FeatureCache(output_dir)
    provenance: dict[str, Any] = {}

    def compute() -> dict[str, Features]:
        return _compute(
            prepared, stimulus, frame_rate, frame_fit, device, duration_s, progress, provenance
        )

    return cache.get_or_compute(
        stimulus, prepared.cnn, prepared.layers, prepared.settings, compute,
        stimulus_sha256=stimulus_sha256, provenance=provenance,
    )  # fmt: skip


def _compute(
    prepared: PreparedCNN,
    stimulus: Path,
    frame_rate: float | str,
    frame_fit: str,
    device: str,
    duration_s: float | None,
    progress: bool | None,
    provenance: dict[str, Any],
) -> dict[str, Features]:
    from tqdm import tqdm

    from bids_syncact.core.activations import blank_activations, extract_activations
    from bids_syncact.core.video import iter_frames, prefetch

    torch_device = cnns.resolve_device(device)
    provenance |= {'Device': str(torch_device), **cnns.set_determinism()}
    model = cnns.build_model(prepared.cnn, prepared.weights, torch_device)
    norm = cnns.normalisation(prepared.cnn)
    recorder = cnns.UnitRecorder(model, prepared.layers, relu_after=cnns.relu_after(prepared.cnn),
                                 cnn=prepared.cnn)  # fmt: skip
    fit = FrameFit(frame_fit, norm.crop_size, norm.resize_size)  # type: ignore[arg-type]
    rate = None if frame_rate == 'native' else float(frame_rate)
    expected = int(np.ceil(duration_s * rate)) if duration_s and rate else None
    frames = prefetch(iter_frames(stimulus, rate, fit=fit, duration_s=duration_s))
    LOGGER.info('Features of %s with %s on %s', stimulus.name, prepared.cnn, torch_device)
    try:
        with tqdm(total=expected, unit='frame', desc=f'{prepared.cnn} {stimulus.name}',
                  disable=None if progress is None else not progress, leave=False) as bar:  # fmt: skip
            times, acts = extract_activations(frames, recorder, norm, device=torch_device,
                                              progress=bar.update)  # fmt: skip
    except (ValueError, av.FFmpegError) as err:
        raise InputDataError(f'cannot decode {stimulus}: {err}: re-encode or replace it') from err
    blank = blank_activations(recorder, norm, device=torch_device)
    return {
        layer: Features(
            frame_times=times,
            acts=acts[layer],
            blank=blank[layer],
            unit_indices=tuple(range(acts[layer].shape[1])),
        )
        for layer in prepared.layers
    }
