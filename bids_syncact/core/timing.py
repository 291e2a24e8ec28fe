"""When each volume was acquired, on the scanner clock (DESIGN.md section 2.2).

Pure functions over BIDS sidecar metadata (plain mappings) and arrays; the discovery layer turns
their ``ValueError`` into a refusal that names the run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

TimingSource = Literal['StartTime', 'DelayTime', 'SliceTiming', 'default']


def acquisition_offset(metadata: Mapping[str, Any], t_r: float) -> tuple[float, TimingSource]:
    """Offset ``c`` (s) of the representative acquisition time within each TR.

    Volume ``i`` (original index, dummies included) is taken as acquired at ``i * t_r + c``.
    The rules, first match wins:

    =========================================== ======================== ===============
    metadata                                     c                        source
    =========================================== ======================== ===============
    ``SliceTimingCorrected: true``, ``StartTime`` ``StartTime``            ``StartTime``
    ``DelayTime``                                ``(t_r - DelayTime) / 2`` ``DelayTime``
    ``SliceTiming``                              ``(min + max) / 2``       ``SliceTiming``
    none of these                                ``t_r / 2``               ``default``
    =========================================== ======================== ===============

    Parameters
    ----------
    metadata : mapping
        The BOLD sidecar: the preprocessed run's keys over the raw run's.
    t_r : float
        Repetition time (s).

    Returns
    -------
    offset_s : float
        ``c`` in seconds, in ``[0, t_r)``.
    source : {'StartTime', 'DelayTime', 'SliceTiming', 'default'}
        Which rule gave it (the ``TimingSource`` of the outputs).

    Raises
    ------
    ValueError
        ``VolumeTiming`` (sparse acquisition: the filters downstream need a uniform TR), or a
        timing value outside ``[0, t_r)`` (often milliseconds written as seconds).

    Examples
    --------
    >>> acquisition_offset({'SliceTimingCorrected': True, 'StartTime': 0.35}, 1.0)
    (0.35, 'StartTime')
    >>> acquisition_offset({'DelayTime': 0.5}, 2.0)
    (0.75, 'DelayTime')
    >>> acquisition_offset({'SliceTiming': [0.0, 0.5, 1.0, 1.5]}, 2.0)
    (0.75, 'SliceTiming')
    >>> acquisition_offset({}, 2.0)
    (1.0, 'default')
    """
    if not 0 < t_r < math.inf:
        raise ValueError(f'RepetitionTime must be a positive number of seconds, got {t_r!r}')
    if metadata.get('VolumeTiming') is not None:
        raise ValueError(
            'VolumeTiming (sparse, non-uniform acquisition) is not supported: the filters need '
            'a uniform TR'
        )
    start_time = metadata.get('StartTime')
    if metadata.get('SliceTimingCorrected') is True and start_time is not None:
        return _within_tr(_seconds(start_time, 'StartTime'), t_r, 'StartTime'), 'StartTime'
    delay = metadata.get('DelayTime')
    if delay is not None:
        delay_s = _within_tr(_seconds(delay, 'DelayTime'), t_r, 'DelayTime')
        return (t_r - delay_s) / 2.0, 'DelayTime'
    slice_timing = metadata.get('SliceTiming')
    if slice_timing is not None and not isinstance(slice_timing, list | tuple):
        raise ValueError(f'SliceTiming must be a list of seconds, got {slice_timing!r}')
    if slice_timing:
        times = np.array([_seconds(t, 'SliceTiming') for t in slice_timing])
        if times.min() < 0 or times.max() >= t_r:
            raise ValueError(
                f'SliceTiming spans {times.min():g}-{times.max():g} s, outside the TR of '
                f'{t_r:g} s (milliseconds instead of seconds?)'
            )
        return float(times.min() + times.max()) / 2.0, 'SliceTiming'
    return t_r / 2.0, 'default'


def _seconds(value: Any, key: str) -> float:
    """Return a sidecar value as finite seconds; anything else is a ValueError naming the key."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f'{key} must be a number of seconds, got {value!r}')
    return float(value)


def _within_tr(value: float, t_r: float, key: str) -> float:
    if not 0 <= value < t_r:
        raise ValueError(
            f'{key} is {value:g} s, outside the TR of {t_r:g} s (milliseconds instead of seconds?)'
        )
    return value


def acquisition_times(n_vols: int, t_r: float, offset_s: float) -> np.ndarray:
    """Acquisition time (s) of every original volume: ``i * t_r + offset_s``.

    Parameters
    ----------
    n_vols : int
        Number of stored volumes, non-steady-state ones included.
    t_r : float
        Repetition time (s).
    offset_s : float
        ``c`` from :func:`acquisition_offset`.

    Returns
    -------
    ndarray of shape (n_vols,)

    Examples
    --------
    >>> acquisition_times(3, 2.0, 0.5)
    array([0.5, 2.5, 4.5])
    """
    return np.arange(n_vols, dtype=float) * t_r + offset_s
