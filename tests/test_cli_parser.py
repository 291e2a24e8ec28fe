"""The command line contract of DESIGN.md section 4."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from bids_syncact import __version__
from bids_syncact.cli import parser as cli_parser
from bids_syncact.cli.parser import STAGES, build_parser
from bids_syncact.cli.run import build_config, main
from bids_syncact.config import DEFAULT_N_NULLS, MIN_N_NULLS
from bids_syncact.core.calibration import MIN_NULLS_FOR_LABELS
from bids_syncact.errors import ExitCode

from .conftest import assert_refused

DESIGN = Path(__file__).resolve().parents[2] / 'shared' / 'DESIGN.md'

#: Every option of the contract (DESIGN.md section 4).
CONTRACT_OPTIONS = [
    '--participant-label', '--participant_label', '--session-label', '-t', '--task-id',
    '--bids-filter-file', '-d', '--derivatives', '--space', '--res', '--bids-database-dir',
    '--skip-bids-validation', '--stimulus-map', '--stimulus', '--stimulus-onset',
    '--dummy-scans', '--frame-rate', '--frame-fit', '--hrf', '--cnn', '--layers', '--weights',
    '--max-units', '--unit-correlation', '--cnn-accuracy', '--features-only', '--confounds-strategy', '--high-pass',
    '--smoothing-fwhm', '--alpha', '--n-nulls', '--reference-networks', '--device', '--nprocs',
    '--omp-nthreads', '--mem-gb', '-w', '--work-dir', '--nipype-plugin-file', '--random-seed',
    '--stop-on-first-crash', '--clean-workdir', '--reports-only', '-v', '--verbose', '--version',
]  # fmt: skip

#: A valid value for each option whose stage is not built yet.
UNBUILT_EXAMPLES: dict[str, list[str]] = {}


def _args(*extra):
    return ['/data', '/out', 'participant', *extra]


def test_help_shows_the_whole_contract(capsys):
    assert main(['--help']) == 0
    text = capsys.readouterr().out
    for option in CONTRACT_OPTIONS:
        assert re.search(rf'(^|[\s,\[]){re.escape(option)}([\s,=]|$)', text, re.MULTILINE), option
    for code in ExitCode:
        assert re.search(rf'^\s+{code.value}\s', text, re.MULTILINE), code
    for group in ('Inputs', 'Stimulus model', 'CNN', 'Coupling', 'Performance and run'):
        assert f'{group}:' in text
    # Options of stages not built yet say so in the help too.
    assert len(re.findall(r'\[not\s+in\s+this\s+version:', text)) == len(UNBUILT_EXAMPLES)


@pytest.mark.skipif(not DESIGN.is_file(), reason='../shared/DESIGN.md missing')
def test_design_lists_no_option_the_parser_lacks():
    section = DESIGN.read_text().split('## 4. CLI contract')[1].split('## 5.')[0]
    documented = set(re.findall(r'(?<![\w-])(--?[a-z][a-z0-9_-]*)', section))
    parser_flags = {flag for action in build_parser()._actions for flag in action.option_strings}
    assert documented <= parser_flags, documented - parser_flags


def test_the_parser_refuses_the_nulls_the_labels_refuse():
    assert MIN_N_NULLS == MIN_NULLS_FOR_LABELS


def test_version(capsys):
    assert main(['--version']) == 0
    assert capsys.readouterr().out.strip() == f'bids-syncact {__version__}'


@pytest.mark.parametrize(
    'argv',
    [
        [],
        ['/data', '/out'],
        _args('--no-such-option'),
        _args('--frame-fit', 'stretch'),
        _args('--participant-label', 'sub-01_x'),
        _args('--alpha', '-1'),
        _args('--n-nulls', 'many'),
        _args('--n-nulls', '10'),
        _args('--unit-correlation', '1.5'),
        _args('--unit-correlation', '0.4'),
        _args('-d', 'xcpd=/x'),
        _args('--cnn-accuracy', 'net=120'),
    ],
)
def test_bad_usage_is_one_line_and_exit_64(capsys, argv):
    assert main(argv) == 64
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith('bids-syncact: error:')
    assert '--help' in err[0]


def test_unknown_analysis_level_is_17(cli):
    result = cli('/data', '/out', 'subject')
    assert_refused(result, 17, "unknown analysis level 'subject'", 'participant or group')


def test_every_unbuilt_stage_has_an_example():
    parser = build_parser()
    unbuilt = {dest for dest, stage in parser.stage_of.items() if not STAGES[stage]}
    assert unbuilt == set(UNBUILT_EXAMPLES)


@pytest.mark.parametrize('dest', sorted(UNBUILT_EXAMPLES))
def test_options_of_unbuilt_stages_are_refused_not_ignored(cli, dataset, tmp_path, dest):
    parser = build_parser()
    result = cli(dataset, tmp_path / 'out', 'participant', *UNBUILT_EXAMPLES[dest])
    stage = parser.stage_of[dest]
    flag = UNBUILT_EXAMPLES[dest][0]
    flag = {'--stop-on-first-crash': flag}.get(flag, flag)
    assert_refused(result, 64, f'{flag} is not available yet', stage)
    assert not (tmp_path / 'out').exists()


def test_building_a_stage_lifts_its_refusal(monkeypatch):
    parser = build_parser()
    namespace = parser.parse_args(_args('--alpha', '0.05'))
    stage = parser.stage_of['alpha']
    monkeypatch.setitem(cli_parser.STAGES, stage, True)
    config = build_config(namespace, parser)
    assert config.coupling.alpha == 0.05


def _config(*extra, built=True, monkeypatch=None):
    parser = build_parser()
    if built:
        for stage in STAGES:
            monkeypatch.setitem(cli_parser.STAGES, stage, True)
    return build_config(parser.parse_args(_args(*extra)), parser)


def test_config_defaults_match_the_design(monkeypatch):
    config = _config(monkeypatch=monkeypatch)
    assert config.inputs.space == 'MNI152NLin2009cAsym'
    assert config.inputs.fmriprep_dir == Path('/data/derivatives/fmriprep')
    assert config.stimulus.frame_rate == 4.0
    assert config.stimulus.frame_fit == 'pad'
    assert config.stimulus.hrf == 'spm'
    assert config.cnn.max_units == 64
    assert config.coupling.confounds_strategy == 'simple'
    assert config.coupling.alpha is None  # auto
    assert config.coupling.n_nulls is None  # DEFAULT_N_NULLS, or what short runs allow
    assert DEFAULT_N_NULLS == 99
    assert config.cnn.unit_correlation == 0.9
    assert config.coupling.effective_high_pass is None
    assert config.execution.device == 'auto'


def test_config_is_frozen_and_parses_every_form(monkeypatch):
    config = _config(
        '--participant-label', 'sub-01', '02', '--session-label', 'ses-pre', '-t', 'task-movie',
        '--res', 'res-2', '-d', 'fmriprep=/deriv', '--stimulus', 'movie=/m.mp4', '/n.mp4',
        '--stimulus-onset', '-3.5', '--layers', 'alexnet:features.1', 'features.4',
        '--weights', 'alexnet=/w.pth', 'none', '--max-units', 'all', '--frame-rate', 'native',
        '--alpha', 'auto', '--confounds-strategy', 'none', '--high-pass', '0.01', '-vv',
        monkeypatch=monkeypatch,
    )  # fmt: skip
    assert config.inputs.participant_label == ('01', '02')
    assert config.inputs.session_label == ('pre',)
    assert config.inputs.task_id == ('movie',)
    assert config.inputs.res == '2'
    assert config.inputs.fmriprep_dir == Path('/deriv')
    assert config.stimulus.stimulus == (('movie', Path('/m.mp4')), (None, Path('/n.mp4')))
    assert config.stimulus.stimulus_onset == -3.5
    assert config.stimulus.frame_rate == 'native'
    assert config.cnn.layers == (('alexnet', 'features.1'), (None, 'features.4'))
    assert config.cnn.weights == (('alexnet', '/w.pth'), (None, 'none'))
    assert config.cnn.max_units is None
    assert config.coupling.effective_high_pass == 0.01
    assert config.execution.verbosity == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.inputs.space = 'T1w'  # type: ignore[misc]
    assert '"participant_label": [' in config.to_json()


def test_the_group_level_parses_its_own_options(monkeypatch):
    parser = build_parser()
    for stage in STAGES:
        monkeypatch.setitem(cli_parser.STAGES, stage, True)
    args = ['/data', '/out', 'group', '--cnn-accuracy', 'mine=70.5', 'vgg11_bn=70.4',
            '--reference-networks', 'atlas.nii.gz', '--participant-label', '01']  # fmt: skip
    config = build_config(parser.parse_args(args), parser)
    assert dict(config.cnn.cnn_accuracy) == {'mine': 70.5, 'vgg11_bn': 70.4}
    assert config.cnn.cnn == ()  # every CNN found, unless --cnn selects
    assert config.coupling.reference_networks == str(Path.cwd() / 'atlas.nii.gz')
    named = build_config(parser.parse_args([*args[:3], '--reference-networks', 'seitzman2018']),
                         parser)  # fmt: skip
    assert named.coupling.reference_networks == 'seitzman2018'


@pytest.mark.parametrize(('level', 'option'), [
    ('group', ['--alpha', '0.1']), ('group', ['--n-nulls', '20']), ('group', ['--nprocs', '2']),
    ('group', ['--weights', 'none']), ('group', ['--stimulus-map', 'm.tsv']),
    ('participant', ['--cnn-accuracy', 'alexnet=56.5']),
])  # fmt: skip
def test_an_option_of_the_other_level_is_refused_not_ignored(cli, level, option):
    result = cli('/data', '/out', level, *option)
    assert_refused(result, 64, option[0], 'only the')


def test_high_pass_with_cosines_is_an_error(monkeypatch):
    from bids_syncact.errors import UsageError

    with pytest.raises(UsageError, match='filter twice'):
        _config('--high-pass', '0.01', monkeypatch=monkeypatch)
    none = _config('--confounds-strategy', 'none', monkeypatch=monkeypatch)
    assert none.coupling.effective_high_pass == 0.008


def test_stimulus_onset_needs_stimulus(cli, dataset, tmp_path):
    assert_refused(cli(dataset, tmp_path / 'out', 'participant', '--stimulus-onset', '3'), 64,
                   '--stimulus-onset needs --stimulus')  # fmt: skip


def test_repeated_options_add_up(monkeypatch):
    config = _config('--participant-label', '01', '--participant-label', 'sub-02', '-t', 'a',
                     '-t', 'b', '--stimulus', 'a=/a.mp4', '--stimulus', 'b=/b.mp4',
                     monkeypatch=monkeypatch)  # fmt: skip
    assert config.inputs.participant_label == ('01', '02')
    assert config.inputs.task_id == ('a', 'b')
    assert [task for task, _ in config.stimulus.stimulus] == ['a', 'b']


@pytest.mark.parametrize(
    ('argv', 'fragment'),
    [
        (['-d', '/a', '-d', 'fmriprep=/b'], 'names fMRIPrep twice'),
        (['--stimulus', 'm=/a.mp4', '--stimulus', 'm=/b.mp4'], 'two movies for the same task'),
        (['--stimulus', '/a.mp4', '--stimulus-map', 'm.tsv'], '--stimulus and --stimulus-map'),
    ],
)
def test_repeated_options_cannot_hide_a_contradiction(monkeypatch, argv, fragment):
    from bids_syncact.errors import UsageError

    with pytest.raises(UsageError, match=re.escape(fragment)):
        _config(*argv, monkeypatch=monkeypatch)
