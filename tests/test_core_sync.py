"""Synchronization on known signals (DESIGN.md section 2.2)."""

from __future__ import annotations

import numpy as np
import pytest

from bids_syncact.core.sync import hrf_kernel, synchronize
from bids_syncact.core.timing import acquisition_times


def _flash(n_ticks=240, at=40, hz=4.0):
    acts = np.zeros((n_ticks, 1))
    acts[at] = 1.0
    return acts, np.arange(n_ticks) / hz


def test_a_flash_peaks_about_5_s_after_it_on_the_scanner_clock():
    acts, times = _flash()  # on screen 10.00-10.25 s into the movie
    acq = np.arange(0, 50, 0.01)
    out = synchronize(acts, times, np.zeros(1), onset=2.0, acq_times=acq, duration_s=60.0, dt=0.01)
    assert acq[np.argmax(out[:, 0])] == pytest.approx(2.0 + 10.125 + 4.95, abs=0.15)


def test_shifting_the_onset_by_6_s_shifts_the_series_by_6_s(rng):
    acts = rng.standard_normal((400, 3))
    times = np.arange(400) / 4
    acq = np.arange(0, 150, 0.5)
    early = synchronize(acts, times, np.zeros(3), onset=3.0, acq_times=acq, duration_s=100.0)
    late = synchronize(acts, times, np.zeros(3), onset=9.0, acq_times=acq, duration_s=100.0)
    np.testing.assert_allclose(late[12:], early[:-12], atol=1e-9)  # 12 samples of 0.5 s


@pytest.mark.parametrize('offset', [0.0, 0.25, 0.5, 0.9])
def test_start_time_moves_samples_by_its_fraction_of_a_tr(rng, offset):
    acts = rng.standard_normal((300, 2))
    times = np.arange(300) / 4
    t_r = 2.0
    fine = np.arange(0, 80, 0.05)
    dense = synchronize(acts, times, np.zeros(2), onset=1.0, acq_times=fine, duration_s=75.0)
    acq = acquisition_times(40, t_r, offset)
    sampled = synchronize(acts, times, np.zeros(2), onset=1.0, acq_times=acq, duration_s=75.0)
    expected = np.column_stack([np.interp(acq, fine, col) for col in dense.T])
    np.testing.assert_allclose(sampled, expected, atol=1e-9)
    if offset:
        at_zero = synchronize(acts, times, np.zeros(2), onset=1.0,
                              acq_times=acquisition_times(40, t_r, 0.0), duration_s=75.0)  # fmt: skip
        assert not np.allclose(sampled, at_zero)


def test_dummy_volumes_leave_the_retained_samples_unchanged(rng):
    acts = rng.standard_normal((200, 4))
    times = np.arange(200) / 4
    blank = rng.standard_normal(4)
    with_dummies = synchronize(acts, times, blank, onset=-3.0,
                               acq_times=acquisition_times(60, 1.0, 0.4), duration_s=50.0)  # fmt: skip
    retained = synchronize(acts, times, blank, onset=-3.0,
                           acq_times=acquisition_times(60, 1.0, 0.4)[4:], duration_s=50.0)  # fmt: skip
    np.testing.assert_allclose(with_dummies[4:], retained, atol=1e-12)


def test_blank_screen_outside_the_movie_and_a_segment_start():
    acts = np.ones((40, 1))  # 10 s of movie at 4 Hz, all ones
    blank = np.array([0.25])
    acq = np.arange(0, 80, 1.0) + 0.5
    out = synchronize(acts, np.arange(40) / 4, blank, onset=20.0, acq_times=acq, duration_s=10.0)
    assert out[:19, 0] == pytest.approx(0.25)  # before the onset: the blank's steady state
    assert out[-1, 0] == pytest.approx(0.25)  # long after the end
    assert out[27, 0] > 0.9  # 27.5 s: 7.5 s into the movie
    # A run that shows the movie from 6 s in: 4 s of movie, then blank.
    part = synchronize(acts, np.arange(40) / 4, blank, onset=20.0, acq_times=acq,
                       duration_s=10.0, start=6.0)  # fmt: skip
    assert part[:, 0].max() < out[:, 0].max()
    assert np.argmax(part[:, 0]) < np.argmax(out[:, 0])


def test_two_scene_cuts_give_steps_at_the_cut_times():
    times = np.arange(0, 60, 0.25)
    acts = np.where(times < 20, 0.0, np.where(times < 40, 1.0, 0.5))[:, None]
    acq = np.arange(0, 90, 0.05)
    out = synchronize(acts, times, np.zeros(1), onset=5.0, acq_times=acq, duration_s=60.0,
                      dt=0.05)  # fmt: skip
    slope = np.gradient(out[:, 0], acq)
    rise = acq[np.argmax(slope)]  # the cut to 1.0 at 25 s on the scanner clock
    fall = acq[np.argmin(slope)]  # the cut to 0.5 at 45 s
    # The steepest change of an HRF-convolved step lags the cut by the same time at each cut.
    assert rise - 25.0 == pytest.approx(fall - 45.0, abs=0.1)
    assert 4.5 < rise - 25.0 < 5.5  # the derivative of a step response is the HRF: its peak


def test_glover_and_spm_kernels_differ_but_both_sum_to_one():
    spm, glover = hrf_kernel('spm', 0.05), hrf_kernel('glover', 0.05)
    assert spm.sum() == pytest.approx(1.0)
    assert glover.sum() == pytest.approx(1.0)
    assert not np.allclose(spm, glover)


def test_inconsistent_inputs_are_refused():
    with pytest.raises(ValueError, match='disagree'):
        synchronize(np.ones((3, 1)), np.arange(4.0), np.zeros(1), onset=0, acq_times=np.ones(2),
                    duration_s=1)  # fmt: skip
    with pytest.raises(ValueError, match='increase'):
        synchronize(np.ones((3, 1)), np.array([0.0, 1.0, 1.0]), np.zeros(1), onset=0,
                    acq_times=np.ones(2), duration_s=3)  # fmt: skip


@pytest.mark.parametrize('fps', [24, 30, 60])
def test_every_native_frame_counts_for_its_own_duration(fps):
    """A one-frame flash at any frame rate: the response's area is the frame's duration."""
    n = fps * 20
    times = np.arange(n) / fps
    acq = np.arange(0, 60, 0.01)
    for frame in (fps * 5, fps * 5 + 1, fps * 5 + 2):
        acts = np.zeros((n, 1))
        acts[frame] = 1.0
        out = synchronize(acts, times, np.zeros(1), onset=2.0, acq_times=acq, duration_s=20.0)
        assert out[:, 0].sum() * 0.01 == pytest.approx(1 / fps, rel=0.02), frame


def test_an_onset_between_grid_steps_is_not_rounded(rng):
    acts = rng.standard_normal((200, 1))
    times = np.arange(200) / 4
    acq = np.arange(0, 70, 0.5)
    base = synchronize(acts, times, np.zeros(1), onset=3.0, acq_times=acq, duration_s=50.0)
    nudged = synchronize(acts, times, np.zeros(1), onset=3.004, acq_times=acq + 0.004,
                         duration_s=50.0)  # fmt: skip
    np.testing.assert_allclose(nudged, base, atol=1e-3 * np.abs(base).max())
