"""Reports, the methods boilerplate and the run's configuration, from a real run of both levels."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import tomllib

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
    assert 'before the run' in warnings  # a 10 s movie in a 20 s run
    assert 'Annotation of the 4 units' in html


def test_the_group_report_shows_labels_fbns_and_the_few_subjects_warning(both_levels):
    _, out, _ = both_levels
    html = (out / 'group.html').read_text()
    assert '01, 02, 03' in html
    assert 'alt="labels per layer"' in html
    assert html.count('alt="consistency per unit"') == 2
    assert 'cannot reach 0.05' in html  # 3 subjects: no FWE p below 0.25
    assert 'One CNN' in html


def test_the_methods_boilerplate_matches_the_settings_that_ran(both_levels):
    _, out, _ = both_levels
    text = (out / 'logs' / 'CITATION.md').read_text()
    assert 'alexnet (RANDOM weights (seed 0)' in text
    assert 'layers features.1, features.4' in text
    assert 'the frame on screen every 0.25 s' in text  # --frame-rate 4
    assert 'letterboxed' in text  # --frame-fit pad
    assert 'SPM canonical' in text
    assert 'taken from StartTime' in text
    assert 'confounds strategy "none"' in text
    assert 'a 0.008 Hz discrete cosine high-pass' in text
    assert 'alpha fixed at 0.05' in text
    assert 'the 4 units with the largest' in text
    assert 'seitzman2018' in text
    assert 'At the group level (3 subjects)' in text
    assert 'all 4 distinct sign flips' in text
    assert 'fMRIPrep: a robust preprocessing pipeline' in text


def test_each_run_leaves_its_configuration(both_levels):
    _, out, work = both_levels
    (path,) = (out / 'sub-01' / 'log').glob('*/config.toml')
    config = tomllib.loads(path.read_text())
    assert config['analysis_level'] == 'participant'
    assert config['coupling']['alpha'] == 0.05
    assert config['coupling']['confounds_strategy'] == 'none'
    assert config['cnn']['max_units'] == 4
    assert config['execution']['work_dir'] == str(work)
    assert config['environment']['run_id'] == path.parent.name
    assert re.fullmatch(r'\d{8}-\d{6}_[0-9a-f]{8}', path.parent.name)
    assert (out / '.bidsignore').read_text().count('logs/')  # logs/ hidden from validators


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
