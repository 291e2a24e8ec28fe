"""Property-based tests (hypothesis) of the TSV/JSON readers, the stimulus map and the timing.

Whatever a file holds, a reader returns something well-formed or raises one of our refusals
(:class:`~bids_syncact.errors.SyncActError`): never another exception, which would reach the
user as "processing failed" (exit 1) instead of a line saying which file is bad.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bids_syncact.bids.discovery import _non_steady_state, read_bids_filters
from bids_syncact.bids.stimulus import (
    MapRow,
    StimulusResolver,
    match_map_row,
    read_stimulus_map,
)
from bids_syncact.core.timing import acquisition_offset, acquisition_times
from bids_syncact.errors import SyncActError

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])  # fmt: skip

#: JSON values: what a sidecar or a filter file can hold.
JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=10,
)  # fmt: skip
#: Text of a table: tabs, newlines, quotes, numbers, n/a and the column names that matter.
CELL = st.sampled_from(['task', 'path', 'onset', 'subject', 'run', 'start', 'stim_file',
                        'duration', 'movie', 'movie.mp4', 'n/a', '', '1', '-2.5', 'nan', 'inf',
                        'x.png', '../up.mp4', '"', 'non_steady_state_outlier00',
                        'sub-01'])  # fmt: skip
TABLE_TEXT = st.lists(st.lists(CELL | st.text(max_size=4), min_size=1, max_size=5),
                      max_size=6).map(lambda rows: '\n'.join('\t'.join(r) for r in rows))  # fmt: skip


def _outcome(read, *args):
    """Return ``(value, None)``, or ``(None, refusal)`` when ``read`` refused in one line."""
    try:
        return read(*args), None
    except SyncActError as err:
        return None, err


@pytest.fixture(scope='module')
def scratch():
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)


# --- timing -----------------------------------------------------------------------------------

TIMING_KEYS = ('StartTime', 'SliceTimingCorrected', 'DelayTime', 'SliceTiming', 'VolumeTiming')
T_R = st.floats(min_value=0.1, max_value=10.0)


@SETTINGS
@given(metadata=st.dictionaries(st.sampled_from(TIMING_KEYS), JSON, max_size=4), t_r=T_R)
def test_the_acquisition_offset_is_within_the_tr_or_refused(metadata, t_r):
    try:
        offset_s, source = acquisition_offset(metadata, t_r)
    except ValueError:  # discovery turns these into one line, exit 65
        return
    assert math.isfinite(offset_s), metadata
    assert 0 <= offset_s < t_r, (metadata, offset_s)
    assert source in {'StartTime', 'DelayTime', 'SliceTiming', 'default'}


@SETTINGS
@given(data=st.data(), t_r=T_R)
def test_slice_timing_gives_the_middle_whatever_the_slice_order(data, t_r):
    times = data.draw(st.lists(st.floats(min_value=0, max_value=t_r, exclude_max=True),
                               min_size=1, max_size=40))  # fmt: skip
    shuffled = data.draw(st.permutations(times))
    offset_s, source = acquisition_offset({'SliceTiming': times}, t_r)
    assert source == 'SliceTiming'
    assert offset_s == pytest.approx((min(times) + max(times)) / 2)
    assert acquisition_offset({'SliceTiming': shuffled}, t_r)[0] == offset_s


@SETTINGS
@given(n_vols=st.integers(1, 2000), t_r=T_R, data=st.data())
def test_volumes_are_one_tr_apart_from_the_offset(n_vols, t_r, data):
    offset_s = data.draw(st.floats(min_value=0, max_value=t_r, exclude_max=True))
    times = acquisition_times(n_vols, t_r, offset_s)
    assert times.shape == (n_vols,)
    assert times[0] == offset_s
    np.testing.assert_allclose(np.diff(times), t_r, rtol=1e-9)


# --- the stimulus map -------------------------------------------------------------------------

LABEL = st.text('abcXYZ019', min_size=1, max_size=4)
MAP_ROW = st.fixed_dictionaries({
    'task': LABEL, 'path': LABEL.map(lambda s: f'{s}.mp4'),
    'onset': st.floats(-100, 100, allow_nan=False).map(lambda x: round(x, 3)),
    'subject': st.none() | LABEL, 'run': st.none() | st.integers(1, 20),
    'start': st.none() | st.floats(0, 100).map(lambda x: round(x, 3)),
})  # fmt: skip


@SETTINGS
@given(rows=st.lists(MAP_ROW, min_size=1, max_size=6))
def test_a_written_stimulus_map_reads_back(scratch, rows):
    path = scratch / 'map.tsv'
    pd.DataFrame(rows).to_csv(path, sep='\t', index=False, na_rep='n/a')
    read = read_stimulus_map(path)
    assert [r.line for r in read] == list(range(2, len(rows) + 2))
    for row, got in zip(rows, read, strict=True):
        assert (got.task, got.subject, got.run) == (row['task'], row['subject'], row['run'])
        assert got.onset_s == row['onset']
        assert got.start_s == (row['start'] or 0.0)
        assert got.path == scratch / row['path']


@SETTINGS
@given(text=TABLE_TEXT | st.binary(max_size=200))
def test_any_stimulus_map_is_read_or_refused_in_one_line(scratch, text):
    path = scratch / 'map.tsv'
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    rows, refusal = _outcome(read_stimulus_map, path)
    assert refusal is None or '\n' not in str(refusal)
    for row in rows or ():
        assert math.isfinite(row.onset_s)
        assert row.start_s >= 0


def _row(line, task, subject, run, path, onset):
    return MapRow(line=line, task=task, subject=subject, session=None, run=run,
                  path=Path(path), onset_s=onset, start_s=0.0)  # fmt: skip


ROWS = st.lists(
    st.builds(_row, st.integers(2, 99), st.sampled_from(['movie', 'film']),
              st.none() | st.sampled_from(['01', '02']), st.none() | st.integers(1, 2),
              st.sampled_from(['a.mp4', 'b.mp4']), st.sampled_from([0.0, 2.0])),
    max_size=6,
)  # fmt: skip
ENTITIES = st.fixed_dictionaries({'task': st.sampled_from(['movie', 'film']),
                                  'subject': st.sampled_from(['01', '02']),
                                  'run': st.integers(1, 2)})  # fmt: skip


@SETTINGS
@given(rows=ROWS, entities=ENTITIES, data=st.data())
def test_the_most_specific_matching_row_wins_in_any_order(rows, entities, data):
    try:
        chosen = match_map_row(rows, entities)
    except SyncActError:  # equally specific rows that disagree: refused in any order too
        with pytest.raises(SyncActError):
            match_map_row(data.draw(st.permutations(rows)), entities)
        return
    matching = [row for row in rows if row.matches(entities)]
    if chosen is None:
        assert not matching
        return
    assert chosen.matches(entities)
    assert chosen.specificity == max(row.specificity for row in matching)
    again = match_map_row(data.draw(st.permutations(rows)), entities)
    assert (again.path, again.onset_s) == (chosen.path, chosen.onset_s)


# --- events, confounds, filter files ----------------------------------------------------------


@SETTINGS
@given(text=TABLE_TEXT)
def test_any_events_file_gives_a_stimulus_none_or_one_line(scratch, text):
    bids = scratch / 'bids'
    (bids / 'sub-01' / 'func').mkdir(parents=True, exist_ok=True)
    events = bids / 'sub-01' / 'func' / 'sub-01_task-movie_events.tsv'
    events.write_text(text)
    stimulus, refusal = _outcome(StimulusResolver(bids).resolve,
                                 {'task': 'movie', 'subject': '01'}, events)  # fmt: skip
    assert refusal is None or '\n' not in str(refusal)
    assert stimulus is None  # no file the rows could name exists in this dataset


@SETTINGS
@given(text=TABLE_TEXT | st.binary(max_size=200), n_vols=st.integers(1, 6))
def test_any_confounds_file_gives_dummies_in_the_run_or_one_line(scratch, text, n_vols):
    path = scratch / 'confounds.tsv'
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    flagged, refusal = _outcome(_non_steady_state, path, n_vols, 'sub-01_task-movie')
    if refusal is not None:
        assert '\n' not in str(refusal)
        return
    assert all(0 <= i < n_vols for i in flagged)
    assert list(flagged) == sorted(set(flagged))


@SETTINGS
@given(value=JSON | st.text(max_size=30))
def test_any_filter_file_is_read_or_refused_in_one_line(scratch, value):
    path = scratch / 'filter.json'
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    filters, refusal = _outcome(read_bids_filters, path)
    if refusal is not None:
        assert refusal.exit_code == 64
        assert '\n' not in str(refusal)
        return
    assert set(filters) <= {'bold'}
    assert all(isinstance(v, dict) for v in filters.values())
    assume(not isinstance(value, str))
    assert filters == value
