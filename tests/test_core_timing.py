"""The acquisition-time table of DESIGN.md section 2.2, and movie probing."""

from __future__ import annotations

import numpy as np
import pytest

from bids_syncact.core.timing import acquisition_offset, acquisition_times
from bids_syncact.core.video import probe_video
from bids_syncact.demo import write_movie


def test_start_time_needs_slice_timing_correction():
    meta = {'SliceTimingCorrected': False, 'StartTime': 0.2, 'SliceTiming': [0.0, 1.0, 1.6]}
    assert acquisition_offset(meta, 2.0) == (0.8, 'SliceTiming')
    assert acquisition_offset({**meta, 'SliceTimingCorrected': True}, 2.0) == (0.2, 'StartTime')


def test_rules_apply_in_order():
    meta = {'DelayTime': 1.0, 'SliceTiming': [0.0, 0.2]}
    assert acquisition_offset(meta, 2.5) == (0.75, 'DelayTime')
    meta.pop('DelayTime')
    assert acquisition_offset(meta, 2.5) == (pytest.approx(0.1), 'SliceTiming')
    assert acquisition_offset({'SliceTiming': []}, 2.5) == (1.25, 'default')


@pytest.mark.parametrize(
    ('meta', 'match'),
    [
        ({'VolumeTiming': [0, 1.5, 3]}, 'VolumeTiming'),
        ({'SliceTimingCorrected': True, 'StartTime': 1500}, 'StartTime is 1500 s'),
        ({'DelayTime': 2.0}, 'DelayTime is 2 s'),
        ({'SliceTiming': [0, 500, 1000]}, 'milliseconds'),
        ({'SliceTiming': [-0.1, 0.5]}, 'outside the TR'),
    ],
)
def test_impossible_timing_is_refused(meta, match):
    with pytest.raises(ValueError, match=match):
        acquisition_offset(meta, 2.0)


def test_acquisition_times_use_original_indices():
    times = acquisition_times(5, 0.8, 0.3)
    np.testing.assert_allclose(times, [0.3, 1.1, 1.9, 2.7, 3.5])


def test_probe_reads_the_duration_of_a_movie(tmp_path):
    movie = write_movie(tmp_path / 'm.mp4', 5.0, fps=6, size=(32, 24))
    info = probe_video(movie)
    assert info.duration_s == pytest.approx(5.0, abs=1 / 6)
    assert (info.width, info.height) == (32, 24)
    assert info.average_rate_hz == pytest.approx(6.0)


def test_probe_refuses_what_is_not_a_movie(tmp_path):
    bad = tmp_path / 'bad.mp4'
    bad.write_bytes(b'\x00' * 2048)
    with pytest.raises(ValueError, match='not a readable movie'):
        probe_video(bad)
