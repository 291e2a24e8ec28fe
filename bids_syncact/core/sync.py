"""Unit activations put on the scanner's clock (DESIGN.md section 2.2).

The frame on screen at each sampled time is held until the next; before and after the movie the
screen is blank (its own activation); the neural series, on a uniform fine grid, is convolved with
nilearn's canonical HRF and sampled at each volume's acquisition time ``i * t_r + c``, with ``i``
the original volume index. Non-steady-state volumes are dropped by the caller, after sampling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from nilearn.glm.first_level import glover_hrf, spm_hrf
from scipy.signal import fftconvolve

HRF_LENGTH_S = 32.0


def hrf_kernel(model: Literal['spm', 'glover'], dt: float) -> np.ndarray:
    """Nilearn's canonical HRF sampled every ``dt`` s over 32 s, summing to 1.

    >>> kernel = hrf_kernel('spm', 0.1)
    >>> kernel.shape, round(float(kernel.sum()), 6), 4.5 <= 0.1 * int(kernel.argmax()) <= 5.5
    ((320,), 1.0, True)
    """
    make = {'spm': spm_hrf, 'glover': glover_hrf}[model]
    kernel = make(dt, oversampling=1, time_length=HRF_LENGTH_S)
    return kernel / kernel.sum()


def synchronize(
    acts: np.ndarray,
    frame_times: np.ndarray,
    blank: np.ndarray,
    *,
    onset: float,
    acq_times: np.ndarray,
    duration_s: float,
    start: float = 0.0,
    hrf: Literal['spm', 'glover'] = 'spm',
    dt: float = 0.01,
) -> np.ndarray:
    """Sample HRF-convolved unit activations at the volumes' acquisition times.

    Parameters
    ----------
    acts : ndarray of shape (n_frames, n_units)
        Activations of the sampled frames.
    frame_times : ndarray of shape (n_frames,)
        When each frame appears, in seconds from the movie's start (PTS), increasing.
    blank : ndarray of shape (n_units,)
        Activations for a blank (mid-grey) screen: before the movie and after its end.
    onset : float
        When the run's segment appears, on the scanner clock (s); negative when the movie began
        before the first stored volume.
    acq_times : ndarray of shape (n_vols,)
        Acquisition time of every original volume (s), dummies included.
    duration_s : float
        Length of the movie (s): the last frame is held until then.
    start : float
        Where in the movie the run's segment begins (s).
    hrf : {'spm', 'glover'}
        Nilearn's canonical HRF.
    dt : float
        Step of the fine grid (s). Each step holds the mean of what was on screen during it,
        so frames shorter than a step count for their own duration; nilearn's kernel starts one
        step late, so ``dt`` bounds the timing error.

    Returns
    -------
    ndarray of shape (n_vols, n_units)

    Examples
    --------
    >>> out = synchronize(np.ones((40, 2)), np.arange(40) / 4, np.zeros(2), onset=5.0,
    ...                   acq_times=np.arange(30) + 0.5, duration_s=10.0)
    >>> out.shape, bool(abs(out[0]).max() < 1e-9), bool(out[12, 0] > 0.9)
    ((30, 2), True, True)
    """
    segment = Segment(acts, frame_times, onset=onset, start=start, end=duration_s)
    return synchronize_segments([segment], blank, acq_times=acq_times, hrf=hrf, dt=dt)


@dataclass(frozen=True)
class Segment:
    """One stimulus file on screen: a movie (or part of it), a clip or an image."""

    acts: np.ndarray
    """(n_frames, n_units) activations of the file's sampled frames."""
    frame_times: np.ndarray
    """(n_frames,) when each frame appears, s from the file's start, increasing."""
    onset: float
    """When ``start`` appears on the scanner clock (s)."""
    start: float = 0.0
    """Where in the file the segment begins (s)."""
    end: float = np.inf
    """Where in the file it stops (s): the last frame before it is held until then."""


def synchronize_segments(
    segments: Sequence[Segment],
    blank: np.ndarray,
    *,
    acq_times: np.ndarray,
    hrf: Literal['spm', 'glover'] = 'spm',
    dt: float = 0.01,
) -> np.ndarray:
    """Sample HRF-convolved activations of what was on screen at the acquisition times.

    Segments are placed by onset; a blank screen fills the time before, between and after them.
    A segment still running when the next begins is cut there.

    Parameters
    ----------
    segments : sequence of Segment
        What was shown (a movie is one segment; an image sequence one per image or clip).
    blank : ndarray of shape (n_units,)
        Activations for a blank (mid-grey) screen.
    acq_times : ndarray of shape (n_vols,)
        Acquisition time of every original volume (s), dummies included.
    hrf : {'spm', 'glover'}
        Nilearn's canonical HRF.
    dt : float
        Step of the fine grid (s), see :func:`synchronize`.

    Returns
    -------
    ndarray of shape (n_vols, n_units)
    """
    acq_times = np.asarray(acq_times, dtype=float)
    blank = np.asarray(blank, dtype=float)
    breaks, values = _screen(sorted(segments, key=lambda seg: seg.onset), blank)
    # Each grid step gets the mean of what was on screen during it (exact for any frame rate).
    first_onset = min((seg.onset for seg in segments), default=0.0)
    grid = np.arange(min(0.0, first_onset) - HRF_LENGTH_S, acq_times.max() + 2 * dt, dt)
    edges = np.r_[grid, grid[-1] + dt]
    integral = _integral(edges, breaks, values)
    neural = np.diff(integral, axis=0) / dt
    kernel = hrf_kernel(hrf, dt)
    # The grid starts 32 s (one kernel) before anything changes: the blank's steady state.
    convolved = fftconvolve(neural, kernel[:, None], axes=0)[: len(grid)]
    position = (acq_times - grid[0]) / dt
    left = np.clip(np.floor(position).astype(int), 0, len(grid) - 2)
    weight = (position - left)[:, None]
    return convolved[left] * (1 - weight) + convolved[left + 1] * weight


def _screen(segments: Sequence[Segment], blank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return what is on screen, piecewise constant: ``values[i]`` from ``breaks[i]`` on."""
    breaks, values = [np.array([-np.inf])], [blank[None, :]]
    for index, seg in enumerate(segments):
        acts = np.asarray(seg.acts, dtype=float)
        frame_times = np.asarray(seg.frame_times, dtype=float)
        if acts.ndim != 2 or len(acts) != len(frame_times) or acts.shape[1] != blank.size:
            raise ValueError(
                f'acts {acts.shape}, frame_times {frame_times.shape} and blank {blank.shape} '
                'disagree'
            )
        if len(frame_times) > 1 and np.any(np.diff(frame_times) <= 0):
            raise ValueError('frame_times must increase')
        if seg.end <= seg.start:
            raise ValueError(f'start {seg.start:g} s is not before the end {seg.end:g} s')
        stop = seg.onset + seg.end - seg.start
        if index + 1 < len(segments):
            stop = min(stop, segments[index + 1].onset)
        first = np.searchsorted(frame_times, seg.start, side='right') - 1  # on screen at start
        later = np.flatnonzero((frame_times > seg.start) & (frame_times < seg.end))
        times = seg.onset + frame_times[later] - seg.start
        later, times = later[times < stop], times[times < stop]
        if stop <= seg.onset or (breaks and seg.onset < breaks[-1][-1]):
            raise ValueError(f'segment at {seg.onset:g} s overlaps the one before')
        breaks += [np.array([seg.onset]), times, np.array([stop])]
        values += [acts[first][None, :] if first >= 0 else blank[None, :], acts[later],
                   blank[None, :]]  # fmt: skip
    return np.concatenate(breaks), np.vstack(values)


def _integral(times: np.ndarray, breaks: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Integral from ``times[0]`` of a piecewise-constant signal, at each of ``times``.

    ``values[i]`` holds on ``[breaks[i], breaks[i + 1])``; ``breaks[0]`` may be ``-inf``.
    """
    start = np.maximum(breaks, times[0])
    widths = np.diff(start)
    cumulative = np.vstack([np.zeros((1, values.shape[1])),
                            np.cumsum(values[:-1] * widths[:, None], axis=0)])  # fmt: skip
    index = np.searchsorted(breaks, times, side='right') - 1
    return cumulative[index] + values[index] * (times - start[index])[:, None]
