"""Which stimulus each run showed, and when (DESIGN.md section 3, "Stimuli").

Three sources, in this order for every run: a row of ``--stimulus-map`` (the most specific matching
row wins), ``--stimulus [TASK=]PATH`` with ``--stimulus-onset``, or the rows of the run's
``_events.tsv`` that carry a ``stim_file``. Paths given on the command line or in the map are
trusted; a ``stim_file`` from the dataset must stay inside ``BIDS_DIR/stimuli`` lexically, and a
symlink may resolve anywhere inside ``BIDS_DIR`` (DataLad datasets), never outside it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Literal

import pandas as pd

from bids_syncact.core.video import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, VideoInfo, probe_video
from bids_syncact.errors import InputDataError, MissingInputError

MAP_KEYS = ('subject', 'session', 'run')
StimulusSource = Literal['stimulus-map', 'command line', 'events']


@dataclass(frozen=True)
class SequenceItem:
    """One image or clip of a sequence, on the scanner clock."""

    path: Path
    onset_s: float
    duration_s: float


@dataclass(frozen=True)
class Stimulus:
    """What a run showed: one movie, or a sequence of images and clips."""

    kind: Literal['movie', 'sequence']
    source: StimulusSource
    path: Path | None = None
    """The movie (kind ``movie``)."""
    onset_s: float = 0.0
    """Movie start on the scanner clock (s); negative: it began before the first stored volume."""
    start_s: float = 0.0
    """Where in the movie (s) the run's segment begins."""
    items: tuple[SequenceItem, ...] = ()
    """Images and clips (kind ``sequence``)."""
    origin: str = ''
    """Where this came from (map row, option, events file), for messages and the plan."""
    movie: VideoInfo | None = field(default=None, compare=False)

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file shown: the movie, or each image and clip of the sequence."""
        if self.kind == 'movie':
            return (self.path,) if self.path is not None else ()
        return tuple(item.path for item in self.items)


@dataclass(frozen=True)
class MapRow:
    """One row of ``--stimulus-map``; empty keys match every value."""

    line: int
    task: str
    subject: str | None
    session: str | None
    run: int | None
    path: Path
    onset_s: float
    start_s: float

    @property
    def specificity(self) -> int:
        """How many of subject, session and run the row names."""
        return sum(getattr(self, key) is not None for key in MAP_KEYS)

    def matches(self, entities: Mapping[str, object]) -> bool:
        """Whether this row applies to a run with these BIDS entities."""
        if self.task != entities.get('task'):
            return False
        for key in MAP_KEYS:
            wanted = getattr(self, key)
            value = entities.get(key)
            if wanted is not None and (value is None or _key(key, value) != wanted):
                return False
        return True


def _key(key: str, value: object) -> object:
    text = str(value).strip()
    if key == 'run':  # '2', '02', 'run-2', and the '2.0' of spreadsheets
        try:
            number = float(text.removeprefix('run-'))
        except ValueError:
            number = math.nan
        if not number.is_integer():
            raise ValueError(f'run {text!r} is not a whole number')
        return int(number)
    prefix = {'subject': 'sub-', 'session': 'ses-', 'task': 'task-'}[key]
    return text.removeprefix(prefix)


def seconds(value: object, what: str) -> float:
    """Return ``value`` as a finite number of seconds; raise ValueError naming ``what``."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise ValueError(f'{what} must be a number of seconds, got {value!r}')
    return number


def _empty(value: object) -> bool:
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or (str(value).strip() in {'', 'n/a'})
    )


def read_stimulus_map(path: Path) -> tuple[MapRow, ...]:
    """Read and check ``--stimulus-map``.

    Raises
    ------
    MissingInputError
        The map does not exist.
    InputDataError
        Missing columns or a value that is not what its column needs, with its line number.
    """
    if not path.is_file():
        raise MissingInputError(f'--stimulus-map {path} does not exist: check the path')
    try:
        table = pd.read_csv(path, sep='\t', dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise InputDataError(f'cannot read --stimulus-map {path}: {err}') from err
    missing = [col for col in ('task', 'path', 'onset') if col not in table.columns]
    if missing:
        raise InputDataError(
            f'--stimulus-map {path} lacks the column(s) {", ".join(missing)}: it needs task, '
            'path, onset (and optionally subject, session, run, start), tab-separated'
        )
    rows = []
    for index, record in enumerate(table.to_dict('records')):
        line = index + 2  # the header is line 1
        try:
            keys = {
                key: None if _empty(record.get(key)) else _key(key, record[key])
                for key in MAP_KEYS
            }
            if _empty(record['task']) or _empty(record['path']):
                raise ValueError('task and path must not be empty')
            start_s = 0.0 if _empty(record.get('start')) else seconds(record['start'], 'start')
            if start_s < 0:
                raise ValueError('start must be 0 or more')
            movie = Path(str(record['path']).strip())
            rows.append(
                MapRow(
                    line=line,
                    task=str(_key('task', record['task'])),
                    path=movie if movie.is_absolute() else path.parent / movie,
                    onset_s=seconds(record['onset'], 'onset'),
                    start_s=start_s,
                    **keys,
                )
            )
        except ValueError as err:
            raise InputDataError(f'--stimulus-map {path}, line {line}: {err}') from err
    return tuple(rows)


def match_map_row(rows: Sequence[MapRow], entities: Mapping[str, object]) -> MapRow | None:
    """Return the most specific row of the map that applies to a run, or None.

    Raises
    ------
    InputDataError
        Two equally specific rows apply and disagree.
    """
    matching = [row for row in rows if row.matches(entities)]
    if not matching:
        return None
    best = max(row.specificity for row in matching)
    top = [row for row in matching if row.specificity == best]
    if len({(row.path, row.onset_s, row.start_s) for row in top}) > 1:
        lines = ', '.join(str(row.line) for row in top)
        raise InputDataError(
            f'--stimulus-map lines {lines} all match {run_name(entities)} equally and disagree: '
            'add subject, session or run to tell them apart'
        )
    return top[0]


def run_name(entities: Mapping[str, object]) -> str:
    """Return a run's BIDS name prefix, e.g. ``sub-01_ses-1_task-movie_run-2``."""
    prefixes = {'subject': 'sub', 'session': 'ses', 'task': 'task', 'acquisition': 'acq',
                'ceagent': 'ce', 'reconstruction': 'rec', 'direction': 'dir', 'run': 'run'}  # fmt: skip
    return '_'.join(
        f'{p}-{entities[k]}' for k, p in prefixes.items() if entities.get(k) is not None
    )


class StimulusResolver:
    """Resolve, check and probe the stimulus of every run, probing each movie once."""

    def __init__(
        self,
        bids_dir: Path,
        *,
        map_rows: Sequence[MapRow] = (),
        cli_stimuli: Sequence[tuple[str | None, Path]] = (),
        cli_onset_s: float | None = None,
    ) -> None:
        self.bids_dir = bids_dir
        self.map_rows = tuple(map_rows)
        self.cli_stimuli = dict(cli_stimuli)
        self.cli_onset_s = 0.0 if cli_onset_s is None else cli_onset_s
        self._probed: dict[Path, VideoInfo] = {}

    def resolve(self, entities: Mapping[str, object], events_file: Path | None) -> Stimulus | None:
        """Return the stimulus of one run, checked and probed; None when the run has none.

        Raises
        ------
        InputDataError
            Unsafe ``stim_file``, an unreadable or corrupt stimulus, a malformed events file.
        MissingInputError
            A stimulus file that does not exist.
        """
        row = match_map_row(self.map_rows, entities)
        if row is not None:
            origin = f'--stimulus-map line {row.line}'
            return Stimulus(
                kind='movie', source='stimulus-map', path=row.path, onset_s=row.onset_s,
                start_s=row.start_s, origin=origin, movie=self._probe(row.path, origin),
            )  # fmt: skip
        task = entities.get('task')
        path = self.cli_stimuli.get(task, self.cli_stimuli.get(None))  # type: ignore[arg-type]
        if path is not None:
            origin = '--stimulus'
            return Stimulus(
                kind='movie', source='command line', path=path, onset_s=self.cli_onset_s,
                origin=origin, movie=self._probe(path, origin),
            )  # fmt: skip
        if events_file is not None:
            return self._from_events(events_file)
        return None

    def _from_events(self, events_file: Path) -> Stimulus | None:
        try:
            events = pd.read_csv(events_file, sep='\t', na_values='n/a', keep_default_na=False)
        except (
            OSError,
            UnicodeDecodeError,
            pd.errors.ParserError,
            pd.errors.EmptyDataError,
        ) as err:
            raise InputDataError(f'cannot read {events_file.name}: {err}') from err
        if 'stim_file' not in events.columns:
            return None
        rows = events[events['stim_file'].map(lambda v: not _empty(v))]
        visual = [
            r for r in rows.to_dict('records')
            if _suffix(str(r['stim_file'])) in VIDEO_EXTENSIONS | IMAGE_EXTENSIONS
        ]  # fmt: skip
        if not visual:
            return None
        if 'onset' not in events.columns:
            raise InputDataError(f'{events_file.name} has stim_file rows but no onset column')
        origin = events_file.name
        if len(visual) == 1 and _suffix(str(visual[0]['stim_file'])) in VIDEO_EXTENSIONS:
            path = self.dataset_stim_file(str(visual[0]['stim_file']), events_file)
            return Stimulus(
                kind='movie', source='events', path=path, onset_s=_event_seconds(visual[0]['onset'], 'onset', origin),
                origin=origin, movie=self._probe(path, origin),
            )  # fmt: skip
        items = sorted((self._sequence_item(r, events_file) for r in visual),
                       key=lambda item: item.onset_s)  # fmt: skip
        for before, after in itertools.pairwise(items):
            if after.onset_s <= before.onset_s:
                raise InputDataError(
                    f'{origin}: {before.path.name} and {after.path.name} both start at '
                    f'{after.onset_s:g} s: one picture at a time (a later onset cuts the one '
                    'before it short)'
                )
        return Stimulus(kind='sequence', source='events', origin=origin, items=tuple(items))

    def _sequence_item(self, record: Mapping[str, object], events_file: Path) -> SequenceItem:
        path = self.dataset_stim_file(str(record['stim_file']), events_file)
        duration = record.get('duration')
        if _suffix(path.name) in VIDEO_EXTENSIONS:
            clip_s = self._probe(path, events_file.name).duration_s
            duration_s = (
                clip_s
                if _empty(duration)
                else _event_seconds(duration, 'duration', events_file.name)
            )
        else:
            _check_readable(path, events_file.name)
            if _empty(duration):
                raise InputDataError(
                    f'{events_file.name}: image {record["stim_file"]} has no duration: give '
                    'every image of a sequence a duration in seconds'
                )
            duration_s = _event_seconds(duration, 'duration', events_file.name)
        onset_s = _event_seconds(record['onset'], 'onset', events_file.name)
        if duration_s <= 0:
            raise InputDataError(
                f'{events_file.name}: {record["stim_file"]} at {onset_s:g} s has duration '
                f'{duration_s:g} s: give each image or clip of a sequence how long it was shown'
            )
        return SequenceItem(path=path, onset_s=onset_s, duration_s=duration_s)

    def dataset_stim_file(self, stim_file: str, events_file: Path) -> Path:
        """Resolve a ``stim_file`` of the dataset under ``BIDS_DIR/stimuli``, safely.

        Raises
        ------
        InputDataError
            An absolute path, a ``..`` component, or a symlink resolving outside ``BIDS_DIR``.
        MissingInputError
            The file (or a symlink's target, e.g. git-annex content not fetched) is missing.
        """
        posix, windows = PurePosixPath(stim_file), PureWindowsPath(stim_file)
        where = f'{events_file.name}: stim_file {stim_file!r}'
        if posix.is_absolute() or windows.is_absolute() or windows.drive:
            raise InputDataError(
                f'{where} is an absolute path: stim_file must be relative to BIDS_DIR/stimuli '
                '(or give the movie with --stimulus-map)'
            )
        if '..' in posix.parts or '..' in windows.parts:
            raise InputDataError(
                f'{where} contains "..": stim_file must stay inside BIDS_DIR/stimuli '
                '(or give the movie with --stimulus-map)'
            )
        path = self.bids_dir / 'stimuli' / posix
        root = self.bids_dir.resolve()
        resolved = path.resolve()
        if not resolved.is_relative_to(root):
            raise InputDataError(
                f'{where} resolves to {resolved}, outside BIDS_DIR: a symlink may only point '
                'inside the dataset (give an outside movie with --stimulus-map)'
            )
        if not resolved.exists():
            hint = (
                ' (a symlink with no content: `datalad get` it)'
                if path.is_symlink() or resolved != path.absolute()
                else ''
            )
            raise MissingInputError(f'{where}: {path} does not exist{hint}')
        return path

    def _probe(self, path: Path, origin: str) -> VideoInfo:
        if path not in self._probed:
            _check_readable(path, origin)
            try:
                self._probed[path] = probe_video(path)
            except ValueError as err:
                raise InputDataError(
                    f'{origin}: {path} is corrupt or not a movie ({err}): re-export it, e.g. '
                    'with ffmpeg -i IN -c:v libx264 OUT.mp4'
                ) from err
        return self._probed[path]


def _event_seconds(value: object, what: str, origin: str) -> float:
    try:
        return seconds(value, what)
    except ValueError as err:
        raise InputDataError(f"{origin}: a stim_file row's {err}") from err


def _suffix(name: str) -> str:
    return PurePosixPath(name).suffix.lower()


def _check_readable(path: Path, origin: str) -> None:
    if not path.exists():
        raise MissingInputError(f'{origin}: stimulus {path} does not exist: check the path')
    if not path.is_file():
        raise InputDataError(f'{origin}: stimulus {path} is not a file')
    try:
        with path.open('rb') as stream:
            stream.read(1)
    except OSError as err:
        raise InputDataError(
            f'{origin}: cannot read stimulus {path} ({err.strerror}): check its permissions'
        ) from err


__all__ = [
    'MapRow',
    'SequenceItem',
    'Stimulus',
    'StimulusResolver',
    'match_map_row',
    'read_stimulus_map',
    'run_name',
]
