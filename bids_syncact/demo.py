"""The embedded demo dataset with planted ground truth, and the layouts the tests build from it.

:func:`make_dataset` writes a raw BIDS dataset of a movie-watching task (a movie under
``stimuli/`` written with PyAV: pans, zooms and cuts over scikit-image's photographs, plus motion;
events with ``stim_file`` and a non-zero onset) and fMRIPrep-style derivatives (preprocessed BOLD in
MNI152NLin2009cAsym on a coarse grid, brain mask, confounds with fMRIPrep's column names, sidecars
with ``StartTime``/``SliceTimingCorrected``).

The planted truth (:mod:`bids_syncact._demo.truth`) is built without :mod:`bids_syncact.core`: its
own forward pass of a seeded AlexNet whose weights it saves, its own HRF sampled at the true
acquisition times. Six units of one layer are each expressed in Gaussian blobs on the ROIs of one
Seitzman 2018 network, at 1.5% peak signal change against 1% white noise plus motion-driven,
white-matter and drift confounds. Truth goes to ``DIR/sourcedata/groundtruth/``.

``bids-syncact-demo [DIR]`` builds the dataset (cached) and runs the app on it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

from bids_syncact._demo import movie as demo_movie
from bids_syncact._demo import truth as demo_truth
from bids_syncact._demo.signals import cosine_basis, synthesize_bold
from bids_syncact.bids.cache import file_sha256
from bids_syncact.bids.io import atomic_write_json
from bids_syncact.demo_scoring import (  # noqa: F401  (the demo's reports, re-exported)
    METHODS,
    group_labels,
    group_labels_report,
    label_count_report,
    label_counts,
    recovery_report,
    recovery_table,
)

SPACE = 'MNI152NLin2009cAsym'
#: Bumped whenever the generator changes what it writes: the cache is rebuilt then.
GENERATOR_VERSION = 3
#: Bounding box (mm) of the coarse MNI grid: x, y, z minimum.
MNI_ORIGIN_MM = (-96.0, -132.0, -78.0)
MNI_EXTENT_MM = (192.0, 228.0, 186.0)


@dataclass(frozen=True)
class DemoSpec:
    """What :func:`make_dataset` writes; the defaults are the demo's (issue 3)."""

    subjects: tuple[str, ...] = ('01', '02', '03')
    runs: tuple[int, ...] = (1, 2)
    task: str = 'movie'
    n_vols: int = 300
    t_r: float = 1.0
    n_dummies: int = 4
    onset_s: float = 2.0
    """Movie start on the scanner clock (s), in every run's events."""
    movie_s: float | None = None
    """Movie length (s); None: to the end of the run plus 1 s."""
    movie_fps: int = 8
    movie_size: tuple[int, int] = (160, 120)
    natural_movie: bool = True
    """Pans, zooms and cuts over photographs; False: drifting blobs (fast, for tests)."""
    planted: bool = True
    """Plant the ground truth; False: noise BOLD (fast, for tests)."""
    shape: tuple[int, int, int] | None = None
    """Voxel grid; None: a coarse MNI grid of ``voxel_mm`` with the MNI152 brain mask."""
    voxel_mm: float = 8.0
    derivatives_res: str | None = None
    """A ``res-`` label for the derivatives; None: no ``res-`` entity."""
    seed: int = 0
    truth: demo_truth.TruthSpec = field(default_factory=demo_truth.TruthSpec)

    @property
    def movie_length_s(self) -> float:
        """Length of the movie (s)."""
        return self.movie_s or self.n_vols * self.t_r - self.onset_s + 1.0


def make_dataset(root: Path, spec: DemoSpec | None = None) -> Path:
    """Write the raw dataset at ``root``, its fMRIPrep derivatives and the ground truth.

    Parameters
    ----------
    root : Path
        The raw BIDS root to create (``derivatives/fmriprep`` and ``sourcedata/groundtruth``
        inside).
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
    affine, mask, baseline = _grid(spec)
    slice_times = _slice_timing(mask.shape[2], spec.t_r)
    start_time = round((min(slice_times) + max(slice_times)) / 2, 6)
    _write_raw_top(root, spec, slice_times)

    movie_path = root / 'stimuli' / 'movie.mp4'
    if spec.natural_movie:
        photos = demo_movie.load_photos()
        shots = demo_movie.plan_shots(spec.movie_length_s, rng, len(photos))
        frames = list(demo_movie.render_frames(photos, shots, fps=spec.movie_fps,
                                               size=spec.movie_size))  # fmt: skip
        demo_movie.write_movie_file(iter(frames), movie_path, fps=spec.movie_fps)
    else:
        frames = blob_frames(spec.movie_length_s, fps=spec.movie_fps, size=spec.movie_size,
                             seed=spec.seed)  # fmt: skip
        demo_movie.write_movie_file(iter(frames), movie_path, fps=spec.movie_fps)

    acq_times = np.arange(spec.n_vols) * spec.t_r + start_time
    if spec.planted:
        maps, regressors = _plant_truth(root, spec, frames, affine, mask, acq_times)
    else:
        maps, regressors = np.zeros((*mask.shape, 0)), np.zeros((spec.n_vols, 0))

    fmriprep = root / 'derivatives' / 'fmriprep'
    atomic_write_json(fmriprep / 'dataset_description.json', {
        'Name': 'fMRIPrep - fMRI PREProcessing workflow (synthetic stand-in)',
        'BIDSVersion': '1.10.0',
        'DatasetType': 'derivative',
        'GeneratedBy': [{'Name': 'bids-syncact-demo', 'Description': 'fMRIPrep-style layout'}],
    })  # fmt: skip
    space = f'space-{SPACE}' + (f'_res-{spec.derivatives_res}' if spec.derivatives_res else '')
    truth = spec.truth
    for sub in spec.subjects:
        for run in spec.runs:
            stem = f'sub-{sub}_task-{spec.task}_run-{run}'
            data, confounds, confounds_meta = synthesize_bold(
                rng, baseline=baseline, mask=mask, maps=maps, regressors=regressors,
                t_r=spec.t_r, n_dummies=spec.n_dummies, peak_psc=truth.peak_psc,
                noise_psc=truth.noise_psc, motion_psc=truth.motion_psc, wm_psc=truth.wm_psc,
                drift_psc=truth.drift_psc,
            )  # fmt: skip
            func = root / f'sub-{sub}' / 'func'
            _write_nifti(func / f'{stem}_bold.nii.gz', np.round(data).astype(np.int16), affine,
                         spec.t_r)  # fmt: skip
            pd.DataFrame({
                'onset': [spec.onset_s], 'duration': [round(spec.movie_length_s, 3)],
                'trial_type': ['movie'], 'stim_file': ['movie.mp4'],
            }).to_csv(func / f'{stem}_events.tsv', sep='\t', index=False)  # fmt: skip

            deriv = fmriprep / f'sub-{sub}' / 'func'
            _write_nifti(deriv / f'{stem}_{space}_desc-preproc_bold.nii.gz', data, affine,
                         spec.t_r)  # fmt: skip
            atomic_write_json(deriv / f'{stem}_{space}_desc-preproc_bold.json', {
                'RepetitionTime': spec.t_r, 'SliceTimingCorrected': True,
                'StartTime': start_time, 'SkullStripped': False, 'TaskName': spec.task,
            })  # fmt: skip
            _write_nifti(deriv / f'{stem}_{space}_desc-brain_mask.nii.gz', mask.astype(np.uint8),
                         affine, None)  # fmt: skip
            confounds.to_csv(deriv / f'{stem}_desc-confounds_timeseries.tsv', sep='\t',
                             index=False, na_rep='n/a')  # fmt: skip
            atomic_write_json(deriv / f'{stem}_desc-confounds_timeseries.json', confounds_meta)
    atomic_write_json(root / '.bids-syncact-demo.json', _stamp(spec))
    return root


def _write_raw_top(root: Path, spec: DemoSpec, slice_times: list[float]) -> None:
    atomic_write_json(root / 'dataset_description.json', {
        'Name': 'bids-syncact demo: synthetic movie watching with planted ground truth',
        'BIDSVersion': '1.10.0',
        'DatasetType': 'raw',
        'License': 'CC0',
        'Authors': ['bids-syncact developers'],
    })  # fmt: skip
    (root / 'README').write_text(
        'Synthetic movie-watching dataset written by bids-syncact-demo. The BOLD is synthetic;\n'
        'the planted ground truth is in sourcedata/groundtruth/.\n'
    )
    pd.DataFrame({'participant_id': [f'sub-{s}' for s in spec.subjects]}).to_csv(
        root / 'participants.tsv', sep='\t', index=False
    )
    atomic_write_json(root / f'task-{spec.task}_bold.json', {
        'TaskName': spec.task,
        'RepetitionTime': spec.t_r,
        'SliceTiming': [round(t, 6) for t in slice_times],
    })  # fmt: skip


def _grid(spec: DemoSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Affine, brain mask and baseline intensity of the voxel grid."""
    if spec.shape is not None:  # a tiny grid for tests: an ellipsoid brain
        affine = np.diag([spec.voxel_mm] * 3 + [1.0])
        affine[:3, 3] = -np.asarray(spec.shape) * spec.voxel_mm / 2
        grid = np.indices(spec.shape, dtype=float)
        centre = (np.asarray(spec.shape, dtype=float) - 1) / 2
        radius = np.asarray(spec.shape, dtype=float) * 0.45
        inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radius, strict=True)) <= 1
        return affine, inside, np.where(inside, 100.0, 20.0)
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template
    from nilearn.image import resample_img

    shape = tuple(int(e // spec.voxel_mm) + 1 for e in MNI_EXTENT_MM)
    affine = np.diag([spec.voxel_mm] * 3 + [1.0])
    affine[:3, 3] = MNI_ORIGIN_MM
    kwargs = {'target_affine': affine, 'target_shape': shape, 'force_resample': True,
              'copy_header': True}  # fmt: skip
    mask_img = resample_img(
        load_mni152_brain_mask(resolution=2), interpolation='nearest', **kwargs
    )
    template = resample_img(load_mni152_template(resolution=2), interpolation='continuous',
                            **kwargs).get_fdata()  # fmt: skip
    mask = mask_img.get_fdata() > 0.5
    scaled = template / np.percentile(template[mask], 99)
    return affine, mask, np.where(mask, 600 + 400 * np.clip(scaled, 0, 1), 20.0)


def _plant_truth(root, spec, frames, affine, mask, acq_times) -> tuple[np.ndarray, np.ndarray]:
    """Compute and save the ground truth; return the maps and the standardised regressors."""
    truth = spec.truth
    out = root / 'sourcedata' / 'groundtruth'
    out.mkdir(parents=True, exist_ok=True)
    model = demo_truth.seeded_alexnet(truth.seed)
    weights = demo_truth.save_weights(model, out / f'alexnet_seed-{truth.seed}_weights.pth')
    ticks = np.arange(int(np.floor(len(frames) / spec.movie_fps * truth.sample_hz)))
    shown = [frames[int(np.floor(t / truth.sample_hz * spec.movie_fps + 1e-9))] for t in ticks]
    acts = demo_truth.layer_activations(model, shown, truth.layer)
    blank_frame = np.full_like(frames[0], demo_truth.BLANK_RGB)
    blank = demo_truth.layer_activations(model, [blank_frame], truth.layer)[0]
    order = np.argsort(-acts.var(axis=0), kind='stable')[: truth.candidates]
    candidates = demo_truth.regressors(acts[:, order], blank[order], tick_hz=truth.sample_hz,
                                       onset_s=spec.onset_s, acq_times=acq_times, dt=truth.dt)  # fmt: skip
    kept = np.arange(spec.n_dummies, spec.n_vols)  # as the coupling sees them: after the dummies,
    drift = np.column_stack([cosine_basis(spec.n_vols, spec.t_r)[kept], np.ones(len(kept))])
    seen = candidates[kept] - drift @ np.linalg.lstsq(drift, candidates[kept], rcond=None)[0]
    picked = demo_truth.choose_units(seen, truth.n_units, truth.pair_r)  # high-passed
    units = [int(order[j]) for j in picked]
    regressors = demo_truth.standardise(candidates[:, picked])
    seen_corr = np.corrcoef(seen[:, picked].T)
    maps = demo_truth.network_maps(mask.shape, affine, truth.networks, truth.blob_sigma_mm)
    maps *= mask[..., None]
    corr = seen_corr

    ticks_table = pd.DataFrame(acts[:, units], columns=[f'unit{u:03d}' for u in units])
    ticks_table.insert(0, 'movie_time', ticks / truth.sample_hz)
    blank_row = pd.DataFrame([[np.nan, *blank[units]]], columns=ticks_table.columns)
    pd.concat([blank_row, ticks_table]).to_csv(out / 'desc-activations_timeseries.tsv', sep='\t',
                                                index=False, na_rep='blank', float_format='%.9g')  # fmt: skip
    table = pd.DataFrame(regressors, columns=[f'unit{u:03d}' for u in units])
    table.insert(0, 'acquisition_time', acq_times)
    table.to_csv(out / 'desc-planted_regressors.tsv', sep='\t', index=False, float_format='%.9g')
    _write_nifti(out / f'space-{SPACE}_desc-planted_maps.nii.gz', maps.astype(np.float32),
                 affine, None)  # fmt: skip
    checksums = {p.name: file_sha256(p) for p in sorted(out.iterdir()) if p.is_file()}
    checksums['stimuli/movie.mp4'] = file_sha256(root / 'stimuli' / 'movie.mp4')
    off_diagonal = np.abs(corr[~np.eye(len(units), dtype=bool)])
    atomic_write_json(out / 'truth.json', {
        'Description': 'Planted ground truth of the bids-syncact demo (independent of core/)',
        'CNN': 'alexnet', 'Layer': truth.layer, 'Weights': weights.name,
        'WeightsSha256': checksums[weights.name], 'Units': units,
        'Networks': dict(zip([str(u) for u in units], truth.networks, strict=True)),
        'ReferenceNetworks': 'seitzman2018 (nilearn fetch_coords_seitzman_2018)',
        'Parameters': asdict(truth) | {'onset_s': spec.onset_s, 't_r': spec.t_r,
                                       'acquisition_offset_s': float(acq_times[0]),
                                       'n_vols': spec.n_vols, 'n_dummies': spec.n_dummies,
                                       'movie_fps': spec.movie_fps, 'frame_fit': 'pad (mid-grey)',
                                       'hrf': 'SPM canonical (scipy.stats.gamma 6, 16, 1/6)'},
        'Activations': 'desc-activations_timeseries.tsv (every tick, and the blank screen)',
        'RegressorCorrelation': np.round(corr, 4).tolist(),
        'MaxAbsCorrelation': float(off_diagonal.max()),
        'VarianceInflation': np.round(demo_truth.variance_inflation(corr), 3).tolist(),
        'ConditionNumber': float(np.linalg.cond(corr)),
        'CorrelationsComputedOn': 'HRF-convolved regressors after the dummies, cosine high-passed',
        'Sha256': checksums,
    })  # fmt: skip
    return maps, regressors


def write_movie(
    path: Path, duration_s: float, *, fps: int = 8, size: tuple[int, int] = (96, 72), seed: int = 0
) -> Path:
    """Write an MPEG-4 movie of drifting coloured blobs with PyAV (fast, for tests)."""
    frames = blob_frames(duration_s, fps=fps, size=size, seed=seed)
    return demo_movie.write_movie_file(iter(frames), path, fps=fps)


def blob_frames(
    duration_s: float, *, fps: int = 8, size: tuple[int, int] = (96, 72), seed: int = 0
) -> list[np.ndarray]:
    """Frames of drifting coloured blobs, ``(height, width, 3)`` uint8.

    Parameters
    ----------
    duration_s : float
        Length (s).
    fps : int
        Frame rate (Hz).
    size : (int, int)
        Width and height (pixels, even).
    seed : int
        Seed of the blobs' paths and colours.
    """
    rng = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    centres, speeds = rng.uniform(0, 1, (4, 2)), rng.uniform(-0.2, 0.2, (4, 2))
    colours = rng.uniform(40, 255, (4, 3))
    frames = []
    for index in range(int(np.ceil(duration_s * fps))):
        t = index / fps
        frame = np.full((height, width, 3), 20.0)
        for centre, speed, colour in zip(centres, speeds, colours, strict=True):
            cx, cy = (centre + speed * t) % 1.0
            blob = np.exp(-(((xx / width - cx) ** 2 + (yy / height - cy) ** 2) / 0.01))
            frame += blob[..., None] * colour
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames


def _slice_timing(n_slices: int, t_r: float) -> list[float]:
    order = list(range(0, n_slices, 2)) + list(range(1, n_slices, 2))  # interleaved
    times = np.empty(n_slices)
    times[order] = np.arange(n_slices) * t_r / n_slices
    return [float(t) for t in times]


def _write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, t_r: float | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nb.Nifti1Image(data, affine)
    img.header.set_xyzt_units('mm', 'sec')
    if t_r is not None:
        img.header.set_zooms((*img.header.get_zooms()[:3], t_r))
    img.to_filename(path)


def _stamp(spec: DemoSpec) -> dict:
    return {'GeneratorVersion': GENERATOR_VERSION, 'Spec': json.loads(json.dumps(asdict(spec)))}


def main(argv: list[str] | None = None) -> int:
    """``bids-syncact-demo [DIR]``: build the demo dataset (cached) and run the app on it."""
    parser = argparse.ArgumentParser(prog='bids-syncact-demo', description=__doc__.split('\n')[0])
    parser.add_argument('dir', nargs='?', type=Path, default=Path('demo'),
                        help='the demo BIDS dataset to build or reuse (default: ./demo)')  # fmt: skip
    parser.add_argument('--rebuild', action='store_true', help='rebuild the dataset')
    args = parser.parse_args(argv)
    root = args.dir.absolute()
    spec = DemoSpec()
    stamp = root / '.bids-syncact-demo.json'
    if root.exists() and any(root.iterdir()) and not stamp.is_file():
        print(f'bids-syncact-demo: error: {root} exists and is not a demo dataset (no {stamp.name}):'
              ' choose another DIR; nothing was changed', file=sys.stderr)  # fmt: skip
        return 64
    cached = stamp.is_file() and json.loads(stamp.read_text()) == _stamp(spec)
    if args.rebuild or not cached:
        print(f'Building the demo dataset in {root} (about a minute) ...', flush=True)
        partial = root.with_name(f'.{root.name}.partial')  # whole or not at all
        shutil.rmtree(partial, ignore_errors=True)
        make_dataset(partial, spec)
        shutil.rmtree(root, ignore_errors=True)  # only ever a stamped demo dataset
        partial.rename(root)
    else:
        print(f'Using the cached demo dataset in {root} (--rebuild to rebuild)', flush=True)

    from bids_syncact.cli.run import main as run_app

    out = root / 'derivatives' / 'syncact'
    work = root.parent / f'{root.name}-work'
    command = [str(root), str(out), 'participant', '-w', str(work)]
    truth = json.loads((root / 'sourcedata' / 'groundtruth' / 'truth.json').read_text())
    weights = root / 'sourcedata' / 'groundtruth' / truth['Weights']
    # the planted truth is on Seitzman's networks: annotate with them, whatever TemplateFlow holds
    references = ['--reference-networks', 'seitzman2018']
    command += ['--weights', f'alexnet={weights}', *references]
    print('Running: bids-syncact ' + ' '.join(command), flush=True)
    code = run_app(command)
    if code == 0:
        print(recovery_report(out, root, truth, spec.subjects, spec.task))
        group = [str(root), str(out), 'group', '-w', str(work), *references]
        print('Running: bids-syncact ' + ' '.join(group), flush=True)
        code = run_app(group)
    if code == 0:
        print(group_labels_report(out, truth))
        print(label_count_report(out, truth, spec.subjects[0]))
        print(f'Demo finished.\n  dataset:      {root}\n  ground truth: '
              f'{root / "sourcedata" / "groundtruth"}\n  plan:         {work / "plan.json"}\n'
              f'  outputs:      {out}')  # fmt: skip
    return code


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
