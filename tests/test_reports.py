"""Reports, the methods boilerplate and the run's configuration, from a real run of both levels."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from .conftest import assert_refused


def _images(html: str) -> list[str]:
    return re.findall(r'<img [^>]*src="([^"]+)"', html)


def test_every_subject_and_the_group_get_a_self_contained_report(both_levels):
    _, out, _ = both_levels
    for name in ('sub-01.html', 'sub-02.html', 'sub-03.html', 'group.html'):
        html = (out / name).read_text()
        sources = _images(html)
        assert sources, name
        assert all(src.startswith('data:image/png;base64,') for src in sources)
        # nothing to fetch: no external script, style, font or link target
        assert not re.search(r'(src|href)="(https?:)?//', html), name


def test_the_subject_report_shows_the_plan_figures_and_warnings(both_levels):
    _, out, _ = both_levels
    html = (out / 'sub-01.html').read_text()
    assert html.count('alt="timing of sub-01_task-movie_run-') == 2
    assert html.count('alt="carpet of sub-01_task-movie_run-') == 2
    assert 'features.1' in html
    assert 'features.4' in html
    assert 'StartTime' in html  # the timing source
    warnings = html.split('id="warnings"')[1].split('</section>')[0]
    assert 'RANDOM weights' in warnings
    assert 'before the run' in warnings  # a 100 s movie in a 140 s run
    assert 'Annotation of the 4 unit clusters' in html
    assert 'against its 20 null maps' in html


def test_the_group_report_shows_labels_fbns_and_the_few_subjects_warning(both_levels):
    _, out, _ = both_levels
    html = (out / 'group.html').read_text()
    assert '01, 02, 03' in html
    assert 'alt="labels per layer"' in html
    assert html.count('alt="consistency per unit"') == 2
    assert 'nothing can be significant at 0.05' in html  # 3 subjects: no FWE p below 0.25
    assert 'null 95% interval' in html  # the similarity against the group null


def test_the_methods_boilerplate_matches_the_settings_that_ran(both_levels):
    _, out, _ = both_levels
    text = (out / 'logs' / 'CITATION.md').read_text()
    assert 'alexnet (RANDOM weights (seed 0)' in text
    assert 'layers features.1, features.4' in text
    assert 'the frame on screen every 0.25 s' in text  # --frame-rate 4
    assert 'letterboxed' in text  # --frame-fit pad
    assert 'SPM canonical' in text
    assert 'taken from the StartTime of the BOLD sidecars' in text
    assert 'confounds strategy "none"' in text
    assert 'a 0.008 Hz discrete cosine high-pass' in text
    assert 'alpha fixed at 0.05' in text
    assert 'the 4 units with the largest' in text
    assert 'complete linkage on 1 - |r| cut at |r| = 0.9' in text  # --unit-correlation default
    assert 'seitzman2018' in text
    assert 'At the group level (3 subjects)' in text
    assert 'all 4 distinct sign flips' in text
    # calibrated labels, not the hypergeometric p: the subject level's contrast, the group's logp
    assert (
        'mean |coefficient| in the network minus outside it (all voxels of the mask) was '
        'computed on the real map and on each null map' in text
    )
    assert 'For the group level, the -log10 one-sided hypergeometric p' in text
    assert 'not population inference' in text
    assert 'Markello RD, Misic B' in text
    assert 'fMRIPrep: a robust preprocessing pipeline' in text


def test_each_run_leaves_its_configuration(both_levels):
    _, out, work = both_levels
    (path,) = (out / 'sub-01' / 'log').glob('*/config.toml')
    tomllib = pytest.importorskip('tomllib')  # Python 3.11+
    config = tomllib.loads(path.read_text())
    assert config['analysis_level'] == 'participant'
    assert config['coupling']['alpha'] == 0.05
    assert config['coupling']['confounds_strategy'] == 'none'
    assert config['cnn']['max_units'] == 4
    assert config['execution']['work_dir'] == str(work)
    assert config['environment']['run_id'] == path.parent.name
    assert re.fullmatch(r'\d{8}-\d{6}_[0-9a-f]{8}', path.parent.name)
    ignored = (out / '.bidsignore').read_text().split()
    assert {'logs/', 'sub-*/log/', '*.html'} <= set(ignored)  # hidden from BIDS validators


def test_reports_only_rebuilds_the_reports_from_the_outputs(both_levels, tmp_path, cli):
    bids, out, _ = both_levels
    copy = tmp_path / 'out'
    shutil.copytree(out, copy)
    for name in ('sub-02.html', 'group.html', 'logs/CITATION.md'):
        (copy / name).unlink()
    before = {p: p.stat().st_mtime_ns for p in copy.rglob('*_boldmap.nii.gz')}
    result = cli(bids, copy, 'participant', '--reports-only', '--participant-label', '02')
    assert result.code == 0, result.err
    assert (copy / 'sub-02.html').is_file()
    assert (copy / 'logs' / 'CITATION.md').is_file()
    assert cli(bids, copy, 'group', '--reports-only').code == 0
    assert (copy / 'group.html').is_file()
    assert {p: p.stat().st_mtime_ns for p in copy.rglob('*_boldmap.nii.gz')} == before
    assert len(list(copy.glob('sub-02/log/*/config.toml'))) == 1  # no new run: no new config


def test_reports_only_without_outputs_is_one_line(tmp_path, cli, dataset):
    out = tmp_path / 'empty'
    out.mkdir()
    (out / 'dataset_description.json').write_text(
        json.dumps(
            {
                'Name': 'x',
                'BIDSVersion': '1.10.0',
                'DatasetType': 'derivative',
                'GeneratedBy': [{'Name': 'bids-syncact'}],
            }
        )
    )
    assert_refused(cli(dataset, out, 'participant', '--reports-only'), 66, 'no participant')
    assert_refused(cli(dataset, out, 'group', '--reports-only'), 66, 'group')
    assert not list(out.glob('*.html'))
    (out / 'dataset_description.json').write_text('{"Name": "x"}')  # not a dataset to pybids
    assert_refused(cli(dataset, out, 'group', '--reports-only'), 65, 'pybids')


def test_a_report_is_written_whole(both_levels):
    _, out, _ = both_levels
    assert not list(Path(out).glob('.*.tmp'))
    for name in ('sub-01.html', 'group.html'):
        assert (out / name).read_text().rstrip().endswith('</html>')


def _coef(**changes):
    meta = {
        'CNN': 'alexnet', 'Layer': 'features.1', 'FrameRate': 'native', 'FrameFit': 'crop',
        'HRF': 'glover', 'MaxUnits': 'all', 'ConfoundsStrategy': 'compcor', 'HighPass': None,
        'SmoothingFWHM': 6.0, 'AlphaMode': 'fixed', 'Alpha': 0.1,
        'Weights': {'Kind': 'DEFAULT', 'Name': 'AlexNet_Weights.IMAGENET1K_V1'},
        'SoftwareVersions': {'bids-syncact': '1.0', 'nilearn': '0.14'},
    }  # fmt: skip
    return meta | changes


def test_the_boilerplate_describes_every_setting_and_every_value_that_differs():
    from bids_syncact.reports.citation import participant_paragraph

    auto = _coef(AlphaMode='auto', Alpha=0.02, AlphaSelection={
        'n_folds': 4, 'gap_s': 45.0, 'grid': [0.3, 0.1, 0.01]})  # fmt: skip
    text = participant_paragraph([_coef(), auto], [{'TimingSource': 'default'}], [], None)
    assert 'every decoded frame' in text  # --frame-rate native
    assert 'centre-cropped' in text
    assert 'Glover canonical' in text
    assert 'all clusters of each layer were kept' in text
    assert 'half a TR (the sidecars give no timing)' in text
    assert 'confounds strategy "compcor"' in text
    assert "fMRIPrep's discrete cosine regressors" in text
    assert 'smoothed by 6 mm FWHM' in text
    assert "torchvision's pretrained weights AlexNet_Weights.IMAGENET1K_V1" in text
    # one subject chose alpha, another fixed it: both said, and that they differ
    assert '4 contiguous blocks' in text
    assert 'at least 45 s' in text
    assert '3-value log grid from 0.01 to 0.3' in text
    assert 'fixed at 0.1' in text
    assert text.count('differing between participant runs') == 1
    two = participant_paragraph([_coef(), _coef(HRF='spm')], [{'TimingSource': 'StartTime'}],
                                [], None)  # fmt: skip
    assert 'Glover or SPM (differing between participant runs)' in two


@pytest.mark.parametrize(('stimulus', 'expected'), [
    ({'kind': 'movie', 'onset_s': -5.0, 'start_s': 0.0, 'duration_s': 30.0}, [(-5.0, 25.0)]),
    ({'kind': 'movie', 'onset_s': 0.0, 'start_s': 60.0, 'duration_s': 100.0}, [(0.0, 40.0)]),
    ({'kind': 'sequence', 'items': [{'onset_s': 2.0, 'duration_s': 1.0},
                                    {'onset_s': 4.0, 'duration_s': 2.5}]},
     [(2.0, 3.0), (4.0, 6.5)]),
])  # fmt: skip
def test_the_timing_figure_shows_what_was_on_screen(stimulus, expected):
    from bids_syncact.reports.subject import shown_intervals

    assert shown_intervals(stimulus) == expected


@pytest.mark.parametrize('option', [['--alpha', '0.1'], ['-t', 'movie'], ['--cnn', 'vgg11'],
                                    ['--session-label', '1']])  # fmt: skip
def test_reports_only_refuses_what_it_would_ignore(cli, tmp_path, option):
    result = cli(tmp_path, tmp_path / 'out', 'participant', '--reports-only', *option)
    assert_refused(result, 64, option[0], '--reports-only')


def test_a_zero_is_an_option_given():
    from bids_syncact.cli.parser import build_parser
    from bids_syncact.cli.run import build_config
    from bids_syncact.errors import UsageError

    parser = build_parser()
    with pytest.raises(UsageError, match='--n-nulls'):
        build_config(parser.parse_args(['/d', '/o', 'group', '--n-nulls', '0']), parser)
