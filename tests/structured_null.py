"""Small, seeded core-level datasets with resting-state structure and no coupling (issue 18).

What the calibration tests and ``benchmarks/bench_calibration.py`` draw their nulls from: arrays,
not files, made to look like what the participant level hands to
:func:`~bids_syncact.core.fbn.fit_layer`.

*The stimulus* (shared by every subject of a dataset, like a movie): CNN-like unit activations
held per shot (a few latent factors through a ReLU, redrawn at each cut, a little jitter from frame
to frame at 4 Hz), a blank screen of its own (lower) activation before the movie's onset and after
its end, a few *near-twin* units (|r| about 0.95 once convolved), synchronized by the pipeline's own
:func:`~bids_syncact.core.sync.synchronize_segments` (nilearn's spm HRF, every stored volume). So
the onset transient, the one thing every unit shares, is in ``D`` as it is in real data.

*A subject* (drawn independently): voxels of an ellipsoid on a small 3-D grid, parcelled into
contiguous cells, two cells per network (membership maps), a few left unassigned. Its BOLD is white
noise, spatially smooth noise, slow spontaneous fluctuations (periods 20-100 s, a 1/f amplitude)
shared within each network with a smooth spatial loading (resting activity), head motion, a
white-matter signal, a drift, and brighter non-steady-state volumes at the start. Each run gets a
:class:`~bids_syncact.core.denoise.CleanSpec` like the default ``simple`` strategy's (6 motion
parameters, white matter, CSF and fMRIPrep's 128 s cosines, the dummies dropped, detrended), and
the BOLD goes through :func:`~bids_syncact.core.denoise.clean` and
:func:`~bids_syncact.core.denoise.concatenate_runs` as :mod:`bids_syncact.bids.runs` does.

``Plant`` adds one unit's synchronized activation (or the mean of several: a cluster) to one
network's voxels at a chosen amplitude (in units of the white noise's SD); several plants may be
given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter

from bids_syncact.core.denoise import CleanSpec, clean, concatenate_runs
from bids_syncact.core.sync import Segment, synchronize_segments

#: fMRIPrep's cosine high-pass period (s).
COSINE_PERIOD_S = 128.0


@dataclass(frozen=True)
class NullSpec:
    """Sizes and amplitudes of a structured-null dataset (defaults: small and fast)."""

    shape: tuple[int, int, int] = (12, 12, 9)
    """Grid; the voxels are the ellipsoid inscribed in it (680 at the default: small enough for
    the 600 fits of ``tests/test_calibration.py``; (15, 15, 11) gives 1,300)."""
    n_networks: int = 8
    cells_per_network: int = 2
    n_unassigned: int = 2
    """Cells that belong to no network."""
    n_runs: int = 2
    n_vols: int = 300
    """Stored volumes per run (two runs of 10 minutes at the default TR)."""
    t_r: float = 2.0
    n_dummies: int = 3
    onset_s: float = 10.0
    """When the movie appears in each run (s after the first stored volume); blank before."""
    tail_s: float = 0.0
    """Blank screen at the end of each run (s): an offset transient too when positive."""
    n_units: int = 8
    n_twins: int = 2
    """Units that are near copies of another unit."""
    n_factors: int = 4
    twin_jitter: float = 0.25
    """SD of the perturbation of a twin's (unit-norm) factor weights."""
    shot_s: tuple[float, float] = (2.0, 7.0)
    frame_hz: float = 4.0
    blank_level: float = 0.3
    """The blank screen's activation, as a fraction of the units' mean activation over shots."""
    noise_sd: float = 1.0
    smooth_noise_sd: float = 0.6
    smooth_noise_sigma: float = 1.5
    """Spatial SD (voxels) of the smooth noise and of the networks' spontaneous loadings."""
    spont_sd: tuple[float, float] = (1.5, 3.0)
    """Range of each network's spontaneous amplitude (per subject)."""
    spont_band_hz: tuple[float, float] = (0.01, 0.05)
    motion_sd: float = 0.3
    wm_sd: float = 0.5
    drift_sd: float = 1.0
    hrf: str = 'spm'
    dt: float = 0.05
    """Step of the synchronization's fine grid (s)."""


@dataclass(frozen=True)
class Plant:
    """A coupling: unit(s) ``units`` drive network ``network`` at ``amplitude`` (noise SDs)."""

    units: Sequence[int]
    network: int
    amplitude: float


@dataclass(frozen=True, eq=False)
class Layout:
    """The voxels and their networks."""

    mask: np.ndarray
    """``shape`` bool: the voxels."""
    networks: np.ndarray
    """``(n_networks, V)`` float64 membership (0 or 1)."""
    loadings: np.ndarray
    """``(n_networks, V)`` the membership smoothed and scaled to peak 1: where each network's
    spontaneous activity (and a planted coupling) reaches."""


@dataclass(frozen=True, eq=False)
class Subject:
    """What :func:`~bids_syncact.core.fbn.fit_layer` takes for one subject."""

    raw_runs: list[np.ndarray]
    """``(n_vols, K)`` per run: synchronized activations over all stored volumes."""
    specs: list[CleanSpec]
    S: np.ndarray
    """``(T, V)`` float32: cleaned, stacked BOLD with unit-norm columns."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Subjects who watched the same movie, on one layout."""

    spec: NullSpec
    layout: Layout
    raw_runs: list[np.ndarray]
    subjects: list[Subject] = field(default_factory=list)
    plant: Plant | Sequence[Plant] | None = None


def make_layout(spec: NullSpec, rng: np.random.Generator) -> Layout:
    """Return the ellipsoid's voxels, parcelled into contiguous cells, two per network."""
    grid = np.indices(spec.shape, dtype=float)
    centre = (np.asarray(spec.shape, dtype=float) - 1) / 2
    radius = np.asarray(spec.shape, dtype=float) / 2
    mask = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radius, strict=True)) <= 1
    xyz = np.stack([g[mask] for g in grid], axis=1)
    n_cells = spec.n_networks * spec.cells_per_network + spec.n_unassigned
    seeds = _spread_points(xyz, n_cells, rng)
    cell = np.argmin(((xyz[:, None, :] - seeds[None]) ** 2).sum(-1), axis=1)
    order = rng.permutation(n_cells)
    networks = np.zeros((spec.n_networks, len(xyz)))
    for n in range(spec.n_networks):
        cells = order[n * spec.cells_per_network : (n + 1) * spec.cells_per_network]
        networks[n] = np.isin(cell, cells)
    loadings = np.zeros_like(networks)
    for n, member in enumerate(networks):
        volume = np.zeros(spec.shape)
        volume[mask] = member
        smooth = gaussian_filter(volume, spec.smooth_noise_sigma)[mask]
        loadings[n] = smooth / smooth.max()
    return Layout(mask=mask, networks=networks, loadings=loadings)


def _spread_points(xyz: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Return ``n`` voxels far apart (greedy farthest points from a random start)."""
    chosen = [int(rng.integers(len(xyz)))]
    dist = ((xyz - xyz[chosen[0]]) ** 2).sum(1)
    for _ in range(n - 1):
        weights = dist**2
        nxt = int(rng.choice(len(xyz), p=weights / weights.sum()))
        chosen.append(nxt)
        dist = np.minimum(dist, ((xyz - xyz[nxt]) ** 2).sum(1))
    return xyz[chosen]


def make_stimulus(spec: NullSpec, rng: np.random.Generator) -> list[np.ndarray]:
    """Return each run's synchronized unit activations ``(n_vols, K)``, over all stored volumes.

    Run ``r`` shows the movie from where run ``r - 1`` stopped, from ``onset_s`` to
    ``tail_s`` before its end; a blank screen before and after.
    """
    k_free = spec.n_units - spec.n_twins
    weights = rng.standard_normal((k_free, spec.n_factors))
    weights /= np.linalg.norm(weights, axis=1, keepdims=True)
    bias = rng.uniform(0.2, 1.0, k_free)
    twins_of = rng.choice(k_free, spec.n_twins, replace=False)
    shown_s = spec.n_vols * spec.t_r - spec.onset_s - spec.tail_s
    total_s = spec.n_runs * shown_s + 1.0
    cuts = [0.0]
    while cuts[-1] < total_s:
        cuts.append(cuts[-1] + rng.uniform(*spec.shot_s))
    times = np.arange(0.0, total_s, 1.0 / spec.frame_hz)
    shot = np.searchsorted(cuts, times, side='right') - 1
    factors = rng.standard_normal((len(cuts), spec.n_factors))[shot]
    factors += 0.15 * rng.standard_normal(factors.shape)  # frame-to-frame jitter within a shot
    free = np.maximum(factors @ weights.T + bias, 0.0)
    # A twin reads the same factors with slightly other weights: |r| about 0.95 once convolved.
    twin_weights = weights[twins_of] + spec.twin_jitter * rng.standard_normal(
        (spec.n_twins, spec.n_factors)
    )
    twins = np.maximum(factors @ twin_weights.T + bias[twins_of], 0.0)
    acts = np.concatenate([free, twins], axis=1)
    acts = acts[:, rng.permutation(spec.n_units)]
    blank = spec.blank_level * acts.mean(axis=0)
    acq = np.arange(spec.n_vols) * spec.t_r + spec.t_r / 2
    runs = []
    for r in range(spec.n_runs):
        start = r * shown_s
        segment = Segment(acts, times, onset=spec.onset_s, start=start, end=start + shown_s)
        runs.append(
            synchronize_segments([segment], blank, acq_times=acq, hrf=spec.hrf, dt=spec.dt)
        )
    return runs


def band_limited(
    rng: np.random.Generator, n: int, t_r: float, band_hz: tuple[float, float], size: int
) -> np.ndarray:
    """Return ``(n, size)`` unit-variance series with a 1/f amplitude inside ``band_hz``.

    Drawn on twice the length and cut in the middle, so the series is not periodic.
    """
    m = 2 * n
    freqs = np.fft.rfftfreq(m, t_r)
    gain = np.zeros_like(freqs)
    inside = (freqs >= band_hz[0]) & (freqs <= band_hz[1])
    gain[inside] = 1.0 / np.sqrt(freqs[inside])
    spectrum = np.fft.rfft(rng.standard_normal((m, size)), axis=0) * gain[:, None]
    series = np.fft.irfft(spectrum, n=m, axis=0)[n // 2 : n // 2 + n]
    series -= series.mean(axis=0)
    return series / np.maximum(series.std(axis=0), 1e-12)


def make_subject(
    spec: NullSpec,
    layout: Layout,
    raw_runs: Sequence[np.ndarray],
    rng: np.random.Generator,
    plant: Plant | Sequence[Plant] | None = None,
) -> Subject:
    """Return one subject's runs: resting BOLD (plus ``plant``: one or several) cleaned and
    stacked."""
    n_vox = layout.networks.shape[1]
    n = spec.n_vols
    cleaned, specs = [], []
    spont_amp = rng.uniform(*spec.spont_sd, spec.n_networks)
    motion_load = _smooth_fields(spec, layout, rng, 6) * spec.motion_sd
    wm_load = rng.uniform(0.0, 1.0, n_vox) * spec.wm_sd
    drift_load = rng.uniform(0.5, 1.0, n_vox) * spec.drift_sd
    t = np.linspace(-1, 1, n)
    drift = t + 0.5 * (t**2 - 1 / 3)
    for r, raw in enumerate(raw_runs):
        bold = spec.noise_sd * rng.standard_normal((n, n_vox))
        noise = rng.standard_normal((n, *spec.shape))
        noise = gaussian_filter(noise, (0, *(3 * [spec.smooth_noise_sigma])))[:, layout.mask]
        bold += spec.smooth_noise_sd * noise / noise.std()
        spont = band_limited(rng, n, spec.t_r, spec.spont_band_hz, spec.n_networks)
        bold += (spont * spont_amp) @ layout.loadings
        motion = np.cumsum(rng.standard_normal((n, 6)), axis=0)
        motion = (motion - motion.mean(0)) / motion.std(0)
        bold += motion @ motion_load
        wm = band_limited(rng, n, spec.t_r, (0.005, 0.1), 1)[:, 0]
        bold += wm[:, None] * wm_load
        bold += drift[:, None] * drift_load
        for one in _plants(plant):
            driver = raw[:, list(one.units)].mean(axis=1)
            kept = np.arange(spec.n_dummies, n)
            driver = (driver - driver[kept].mean()) / driver[kept].std()
            bold += one.amplitude * driver[:, None] * layout.loadings[one.network]
        bold[: spec.n_dummies] += 5.0 * np.exp(-np.arange(spec.n_dummies))[:, None]
        confounds = np.column_stack([
            motion + 0.05 * rng.standard_normal(motion.shape),
            wm + 0.05 * rng.standard_normal(n),
            band_limited(rng, n, spec.t_r, (0.005, 0.1), 1)[:, 0],  # CSF, unrelated here
            _cosines(n, spec.t_r),
        ])  # fmt: skip
        run_spec = CleanSpec(
            n_vols=n, t_r=spec.t_r, sample_mask=np.arange(spec.n_dummies, n),
            confounds=confounds, high_pass=None, detrend=True, name=f'run-{r + 1}',
        )  # fmt: skip
        specs.append(run_spec)
        cleaned.append(clean(bold, run_spec))
    S = concatenate_runs(cleaned, drop_silent=True)
    return Subject(raw_runs=list(raw_runs), specs=specs, S=S)


def _plants(plant: Plant | Sequence[Plant] | None) -> list[Plant]:
    if plant is None:
        return []
    return [plant] if isinstance(plant, Plant) else list(plant)


def _smooth_fields(spec: NullSpec, layout: Layout, rng: np.random.Generator, k: int) -> np.ndarray:
    """Return ``(k, V)`` spatially smooth loadings of unit SD."""
    fields = gaussian_filter(rng.standard_normal((k, *spec.shape)), (0, 3, 3, 3))[:, layout.mask]
    return fields / fields.std(axis=1, keepdims=True)


def _cosines(n_vols: int, t_r: float) -> np.ndarray:
    """Return fMRIPrep's DCT basis of ``COSINE_PERIOD_S`` (its ``cosineXX`` columns)."""
    n_cos = int(np.floor(2 * n_vols * t_r / COSINE_PERIOD_S))
    i = np.arange(n_vols)
    return np.column_stack(
        [
            np.sqrt(2 / n_vols) * np.cos(np.pi * (2 * i + 1) * k / (2 * n_vols))
            for k in range(1, n_cos + 1)
        ]
    )


def make_dataset(
    seed: int,
    *,
    n_subjects: int = 1,
    plant: Plant | Sequence[Plant] | None = None,
    spec: NullSpec | None = None,
) -> Dataset:
    """Return a seeded dataset: one layout, one movie, ``n_subjects`` independent subjects.

    Parameters
    ----------
    seed : int
        Everything is drawn from it; subject ``i`` draws from its own stream, so the first
        subjects are the same whatever ``n_subjects``.
    plant : Plant or sequence of Plant, optional
        Couplings given to every subject.
    """
    spec = spec or NullSpec()
    rng = np.random.default_rng([seed, 0])
    layout = make_layout(spec, rng)
    raw_runs = make_stimulus(spec, rng)
    subjects = [
        make_subject(spec, layout, raw_runs, np.random.default_rng([seed, 1, i]), plant)
        for i in range(n_subjects)
    ]
    return Dataset(spec=spec, layout=layout, raw_runs=raw_runs, subjects=subjects, plant=plant)
