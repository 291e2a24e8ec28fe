"""The embedded demo dataset, and the synthetic movie layouts the tests build from it.

:func:`make_dataset` writes a raw BIDS dataset of a movie-watching task (a movie under
``stimuli/`` written with PyAV, events with ``stim_file`` and a non-zero onset) with fMRIPrep-style
derivatives (preprocessed BOLD in MNI152NLin2009cAsym, brain mask, confounds with fMRIPrep's column
names, sidecars with ``StartTime``/``SliceTimingCorrected``). It is built without
:mod:`bids_syncact.core`, so the app is checked against files it did not write itself.

``bids-syncact-demo [DIR]`` builds the dataset (cached) and runs the app on it. The BOLD here is
noise: the planted ground truth comes with the demo issue (DESIGN.md section 1).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import nibabel as nb
import numpy as np
import pandas as pd

SPACE = 'MNI152NLin2009cAsym'
#: fMRIPrep's confound columns written besides cosines and non-steady-state flags.
MOTION = ('trans_x', 'trans_y', 'trans_z', 'rot_x', 'rot_y', 'rot_z')


@dataclass(frozen=True)
class DemoSpec:
    """What :func:`make_dataset` writes; the defaults are the demo's."""

    subjects: tuple[str, ...] = ('01', '02', '03')
    runs: tuple[int, ...] = (1, 2)
    task: str = 'movie'
    n_vols: int = 300
    t_r: float = 1.0
    shape: tuple[int, int, int] = (20, 24, 20)
    """Voxel grid of the coarse MNI space (mm voxels of ``voxel_mm``)."""
    voxel_mm: float = 8.0
    n_dummies: int = 4
    onset_s: float = 2.0
    """Movie start on the scanner clock (s), in every run's events."""
    movie_s: float | None = None
    """Movie length (s); None: long enough to cover the runs."""
    movie_fps: int = 8
    movie_size: tuple[int, int] = (96, 72)
    seed: int = 0
    derivatives_res: str | None = None
    """A ``res-`` label for the derivatives; None: no ``res-`` entity."""


def make_dataset(root: Path, spec: DemoSpec | None = None) -> Path:
    """Write the raw dataset at ``root`` and its fMRIPrep derivatives under ``derivatives/``.

    Parameters
    ----------
    root : Path
        The raw BIDS root to create.
    spec : DemoSpec, optional
        Sizes and timing; default: the demo's.

    Returns
    -------
    Path
        ``root``.
    """
    spec = spec or DemoSpec()
    rng = np.random.default_rng(spec.seed)
    root.mkdir(parents=True, exist_ok=True)
    _write_json(root / 'dataset_description.json', {
        'Name': 'bids-syncact demo: synthetic movie watching',
        'BIDSVersion': '1.10.0',
        'DatasetType': 'raw',
        'License': 'CC0',
        'Authors': ['bids-syncact developers'],
    })  # fmt: skip
    (root / 'README').write_text(
        'Synthetic movie-watching dataset written by bids-syncact-demo. The BOLD is synthetic.\n'
    )
    pd.DataFrame({'participant_id': [f'sub-{s}' for s in spec.subjects]}).to_csv(
        root / 'participants.tsv', sep='\t', index=False
    )
    slice_times = _slice_timing(spec.shape[2], spec.t_r)
    _write_json(root / f'task-{spec.task}_bold.json', {
        'TaskName': spec.task,
        'RepetitionTime': spec.t_r,
        'SliceTiming': [round(t, 6) for t in slice_times],
    })  # fmt: skip
    movie_s = spec.movie_s or spec.n_vols * spec.t_r - spec.onset_s + 1.0
    write_movie(root / 'stimuli' / 'movie.mp4', movie_s, fps=spec.movie_fps,
                size=spec.movie_size, seed=spec.seed)  # fmt: skip

    fmriprep = root / 'derivatives' / 'fmriprep'
    _write_json(fmriprep / 'dataset_description.json', {
        'Name': 'fMRIPrep - fMRI PREProcessing workflow',
        'BIDSVersion': '1.10.0',
        'DatasetType': 'derivative',
        'GeneratedBy': [{'Name': 'fMRIPrep', 'Version': '24.1.1 (synthetic stand-in)'}],
    })  # fmt: skip
    affine = np.diag([spec.voxel_mm] * 3 + [1.0])
    affine[:3, 3] = -np.asarray(spec.shape) * spec.voxel_mm / 2
    mask = _ellipsoid(spec.shape)
    for sub in spec.subjects:
        for run in spec.runs:
            stem = f'sub-{sub}_task-{spec.task}_run-{run}'
            data = (rng.standard_normal((*spec.shape, spec.n_vols)) + 100).astype(np.float32)
            _write_nifti(root / f'sub-{sub}' / 'func' / f'{stem}_bold.nii.gz', data, affine,
                         spec.t_r)  # fmt: skip
            pd.DataFrame({
                'onset': [spec.onset_s], 'duration': [round(movie_s, 3)],
                'trial_type': ['movie'], 'stim_file': ['movie.mp4'],
            }).to_csv(root / f'sub-{sub}' / 'func' / f'{stem}_events.tsv', sep='\t', index=False)  # fmt: skip

            func = fmriprep / f'sub-{sub}' / 'func'
            space = f'space-{SPACE}' + (
                f'_res-{spec.derivatives_res}' if spec.derivatives_res else ''
            )
            _write_nifti(func / f'{stem}_{space}_desc-preproc_bold.nii.gz', data * mask[..., None],
                         affine, spec.t_r)  # fmt: skip
            _write_json(func / f'{stem}_{space}_desc-preproc_bold.json', {
                'RepetitionTime': spec.t_r,
                'SliceTimingCorrected': True,
                'StartTime': round((min(slice_times) + max(slice_times)) / 2, 6),
                'SkullStripped': False,
                'TaskName': spec.task,
            })  # fmt: skip
            _write_nifti(func / f'{stem}_{space}_desc-brain_mask.nii.gz', mask.astype(np.uint8),
                         affine, None)  # fmt: skip
            confounds = _confounds(rng, spec.n_vols, spec.t_r, spec.n_dummies)
            confounds.to_csv(func / f'{stem}_desc-confounds_timeseries.tsv', sep='\t',
                             index=False, na_rep='n/a')  # fmt: skip
            _write_json(func / f'{stem}_desc-confounds_timeseries.json',
                        {c: {'Description': c} for c in confounds.columns})  # fmt: skip
    _write_json(root / '.bids-syncact-demo.json', asdict(spec))
    return root


def write_movie(
    path: Path, duration_s: float, *, fps: int = 8, size: tuple[int, int] = (96, 72), seed: int = 0
) -> Path:
    """Write an MPEG-4 movie of drifting coloured blobs with PyAV.

    Parameters
    ----------
    path : Path
        Destination (``.mp4``).
    duration_s : float
        Length (s).
    fps : int
        Frame rate (Hz).
    size : (int, int)
        Width and height (pixels, even).
    seed : int
        Seed of the blobs' paths and colours.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    centres, speeds = rng.uniform(0, 1, (4, 2)), rng.uniform(-0.2, 0.2, (4, 2))
    colours = rng.uniform(40, 255, (4, 3))
    with av.open(str(path), mode='w') as container:
        stream = container.add_stream('mpeg4', rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, 'yuv420p'
        for index in range(int(np.ceil(duration_s * fps))):
            t = index / fps
            frame = np.full((height, width, 3), 20.0)
            for centre, speed, colour in zip(centres, speeds, colours, strict=True):
                cx, cy = (centre + speed * t) % 1.0
                blob = np.exp(-(((xx / width - cx) ** 2 + (yy / height - cy) ** 2) / 0.01))
                frame += blob[..., None] * colour
            image = av.VideoFrame.from_ndarray(np.clip(frame, 0, 255).astype(np.uint8), 'rgb24')
            for packet in stream.encode(image):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _slice_timing(n_slices: int, t_r: float) -> list[float]:
    order = list(range(0, n_slices, 2)) + list(range(1, n_slices, 2))  # interleaved
    times = np.empty(n_slices)
    times[order] = np.arange(n_slices) * t_r / n_slices
    return [float(t) for t in times]


def _ellipsoid(shape: Sequence[int]) -> np.ndarray:
    grid = np.indices(shape, dtype=float)
    centre = (np.asarray(shape, dtype=float) - 1) / 2
    radius = np.asarray(shape, dtype=float) * 0.45
    inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radius, strict=True)) <= 1
    return inside


def _confounds(rng: np.random.Generator, n_vols: int, t_r: float, n_dummies: int) -> pd.DataFrame:
    table = {
        'global_signal': rng.standard_normal(n_vols),
        'csf': rng.standard_normal(n_vols),
        'white_matter': rng.standard_normal(n_vols),
    }
    motion = np.cumsum(rng.standard_normal((n_vols, 6)) * 0.01, axis=0)
    table |= dict(zip(MOTION, motion.T, strict=True))
    fd = np.abs(np.diff(motion[:, :3], axis=0)).sum(axis=1)
    table['framewise_displacement'] = np.r_[np.nan, fd]
    times = np.arange(n_vols) * t_r
    n_cos = max(1, int(np.floor(2 * n_vols * t_r * 1 / 128)))  # fMRIPrep's 128 s cutoff
    for k in range(1, n_cos + 1):
        table[f'cosine{k - 1:02d}'] = np.sqrt(2 / n_vols) * np.cos(
            np.pi * (2 * times / t_r + 1) * k / (2 * n_vols)
        )
    for k in range(n_dummies):
        flag = np.zeros(n_vols)
        flag[k] = 1.0
        table[f'non_steady_state_outlier{k:02d}'] = flag
    return pd.DataFrame(table)


def _write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, t_r: float | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nb.Nifti1Image(data, affine)
    img.header.set_xyzt_units('mm', 'sec')
    if t_r is not None:
        img.header.set_zooms((*img.header.get_zooms()[:3], t_r))
    img.to_filename(path)


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + '\n')


def main(argv: list[str] | None = None) -> int:
    """``bids-syncact-demo [DIR]``: build the demo dataset (cached) and run the app on it."""
    parser = argparse.ArgumentParser(prog='bids-syncact-demo', description=__doc__.split('\n')[0])
    parser.add_argument('dir', nargs='?', type=Path, default=Path('demo'),
                        help='where the dataset, outputs and work dir go (default: ./demo)')  # fmt: skip
    parser.add_argument('--rebuild', action='store_true', help='rebuild the dataset')
    args = parser.parse_args(argv)
    root = args.dir.absolute()
    bids_dir = root / 'bids'
    spec = DemoSpec()
    stamp = bids_dir / '.bids-syncact-demo.json'
    cached = stamp.is_file() and json.loads(stamp.read_text()) == json.loads(
        json.dumps(asdict(spec))
    )
    if args.rebuild or not cached:
        shutil.rmtree(bids_dir, ignore_errors=True)
        print(f'Building the demo dataset in {bids_dir} ...', flush=True)
        make_dataset(bids_dir, spec)
    else:
        print(f'Using the demo dataset in {bids_dir}', flush=True)

    from bids_syncact.cli.run import main as run_app

    out, work = root / 'out', root / 'work'
    code = run_app([str(bids_dir), str(out), 'participant', '-w', str(work)])
    if code == 0:
        print(f'Demo finished. Dataset: {bids_dir}; plan: {work / "plan.json"}')
    return code


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
