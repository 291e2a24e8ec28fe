"""One frozen configuration, made once by the CLI and passed down.

There is no global configuration module: :func:`bids_syncact.cli.run.main` builds a :class:`Config`
from the parsed command line and hands it (or the few values they need) to what runs next. The
defaults here are the single source of the defaults shown by ``bids-syncact --help``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

DEFAULT_SPACE = 'MNI152NLin2009cAsym'
CONFOUNDS_STRATEGIES = ('simple', 'scrubbing', 'compcor', 'none')
FRAME_FITS = ('pad', 'crop', 'squash')
HRF_MODELS = ('spm', 'glover')
DEVICES = ('auto', 'cpu', 'cuda')
#: High-pass cutoff (Hz) used with ``--confounds-strategy none``: fMRIPrep's strategies already
#: carry the ``cosine_XX`` regressors (DESIGN.md section 2.3).
HIGH_PASS_WITHOUT_COSINES_HZ = 0.008


def _frozen(mapping: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True, kw_only=True)
class InputConfig:
    """Where the data are and which part of it to process (DESIGN.md section 3)."""

    bids_dir: Path
    fmriprep_dir: Path
    participant_label: tuple[str, ...] = ()
    """Subject labels without ``sub-``; empty: all subjects."""
    session_label: tuple[str, ...] = ()
    task_id: tuple[str, ...] = ()
    bids_filters: Mapping[str, Mapping[str, Any]] = field(default_factory=_frozen)
    """Queries of ``--bids-filter-file`` by key (``bold``)."""
    space: str = DEFAULT_SPACE
    res: str | None = None
    """Resolution label without ``res-``; None: the one resolution present."""
    bids_database_dir: Path | None = None
    skip_bids_validation: bool = False


@dataclass(frozen=True, kw_only=True)
class StimulusConfig:
    """How the stimulus is found and sampled (DESIGN.md sections 2.1-2.2 and 3)."""

    stimulus_map: Path | None = None
    stimulus: tuple[tuple[str | None, Path], ...] = ()
    """``--stimulus [TASK=]PATH`` pairs; task None applies to every selected task."""
    stimulus_onset: float | None = None
    """Movie start (s, scanner clock) for ``--stimulus``; None: 0 s."""
    dummy_scans: int | None = None
    frame_rate: float | Literal['native'] = 4.0
    frame_fit: str = 'pad'
    hrf: str = 'spm'


@dataclass(frozen=True, kw_only=True)
class CNNConfig:
    """Which networks, layers and weights give the unit activations (DESIGN.md section 2.1)."""

    cnn: tuple[str, ...] = ('alexnet',)
    layers: tuple[tuple[str | None, str], ...] = ()
    """``(cnn or None, module name)`` pairs; empty: each family's preset."""
    weights: tuple[tuple[str | None, str], ...] = ()
    """``(cnn or None, DEFAULT|none|PATH)`` pairs; empty: DEFAULT for every CNN."""
    max_units: int | None = 64
    """Units kept per layer; None: all."""
    unit_correlation: float = 0.9
    """Units whose stimulus series correlate at ``|r| >=`` this form one cluster (complete
    linkage); 1: single units (DESIGN.md section 2.4)."""
    cnn_accuracy: Mapping[str, float] = field(default_factory=_frozen)
    features_only: bool = False


#: Nulls per subject and layer by default (``--n-nulls``): the smallest p is 0.01.
DEFAULT_N_NULLS = 99
#: Fewest nulls that may label (:data:`bids_syncact.core.calibration.MIN_NULLS_FOR_LABELS`).
MIN_N_NULLS = 20


@dataclass(frozen=True, kw_only=True)
class CouplingConfig:
    """Denoising, coupling, significance and annotation (DESIGN.md sections 2.3-2.5)."""

    confounds_strategy: str = 'simple'
    high_pass: float | None = None
    """High-pass cutoff (Hz); None: the strategy's cosines, or 0.008 Hz with ``none``."""
    smoothing_fwhm: float | None = None
    alpha: float | None = None
    """Sparsity; None: chosen by blocked cross-validation (``auto``)."""
    n_nulls: int | None = None
    """Circular-shift nulls; None: ``DEFAULT_N_NULLS``, or the largest N >= 20 that a subject's
    runs allow (warned); 0: no inference (labels ``n/a``)."""
    reference_networks: str = 'auto'
    """``auto`` (schaefer2018-7, else seitzman2018), a name, or a path."""

    @property
    def effective_high_pass(self) -> float | None:
        """High-pass cutoff (Hz) that the filter applies; None when cosines do the job."""
        if self.high_pass is not None:
            return self.high_pass
        return HIGH_PASS_WITHOUT_COSINES_HZ if self.confounds_strategy == 'none' else None


@dataclass(frozen=True, kw_only=True)
class ExecutionConfig:
    """How and where it runs, and the random seed."""

    work_dir: Path
    device: str = 'auto'
    nprocs: int | None = None
    omp_nthreads: int | None = None
    mem_gb: float | None = None
    nipype_plugin_file: Path | None = None
    random_seed: int = 0
    stop_on_first_crash: bool = False
    clean_workdir: bool = False
    reports_only: bool = False
    verbosity: int = 0


@dataclass(frozen=True, kw_only=True)
class Config:
    """Everything one invocation of ``bids-syncact`` was asked to do."""

    analysis_level: Literal['participant', 'group']
    output_dir: Path
    inputs: InputConfig
    stimulus: StimulusConfig = field(default_factory=StimulusConfig)
    cnn: CNNConfig = field(default_factory=CNNConfig)
    coupling: CouplingConfig = field(default_factory=CouplingConfig)
    execution: ExecutionConfig

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable view (paths as strings), for logs and sidecars."""
        return _plain(self)

    def to_json(self) -> str:
        """Return the configuration as indented JSON."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
