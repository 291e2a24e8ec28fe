"""Both levels end to end with three CNNs on weights files, offline: the similarity path."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torchvision.models import get_model

from bids_syncact.cli.run import main
from bids_syncact.demo import make_dataset

from .conftest import TINY

CNNS = {'alexnet': 'features.1', 'resnet18': 'layer1', 'squeezenet1_0': 'features.1'}
ACCURACY = {'alexnet': 56.522, 'resnet18': 69.758, 'squeezenet1_0': 58.092}


@pytest.mark.slow  # three CNNs through both levels: make test-integration
def test_three_cnns_on_weights_files_are_scored_against_their_accuracy(tmp_path):
    from dataclasses import replace

    # 140 volumes: enough for 20 nulls, which the similarity is tested against
    bids = make_dataset(tmp_path / 'bids', replace(TINY, subjects=('01', '02', '03'), n_vols=140))
    weights = []
    for seed, cnn in enumerate(CNNS):
        torch.manual_seed(seed)
        path = tmp_path / f'{cnn}.pth'
        torch.save(get_model(cnn, weights=None).state_dict(), path)
        weights.append(f'{cnn}={path}')
    out, work = tmp_path / 'out', tmp_path / 'work'
    participant = [
        str(bids), str(out), 'participant', '-w', str(work), '--skip-bids-validation',
        '--cnn', *CNNS, '--weights', *weights,
        '--layers', *(f'{cnn}:{layer}' for cnn, layer in CNNS.items()),
        '--max-units', '4', '--confounds-strategy', 'none', '--alpha', '0.05', '--n-nulls', '20',
        '--reference-networks', 'seitzman2018',
    ]  # fmt: skip
    assert main(participant) == 0
    tables = [p for p in out.glob('sub-*/func/*_annotations.tsv') if '_desc-' not in p.name]
    assert len(tables) == 3 * len(CNNS)
    assert len(list(out.glob('sub-*/func/*_desc-null_annotations.tsv'))) == 3 * len(CNNS)

    accuracy = [f'{cnn}={acc}' for cnn, acc in ACCURACY.items()]
    group = [str(bids), str(out), 'group', '-w', str(work), '--cnn-accuracy', *accuracy,
             '--reference-networks', 'seitzman2018']  # fmt: skip
    assert main(group) == 0
    table = pd.read_csv(out / 'task-movie_desc-group_similarity.tsv', sep='\t')
    assert sorted(table.cnn) == sorted(CNNS)
    assert table.set_index('cnn').imagenet_top1.to_dict() == ACCURACY
    assert table.descriptive.all()
    assert np.all(np.isfinite(table.similarity))  # in SDs of the null
    assert np.all(table.null_low < table.null_high)
    meta = json.loads((out / 'task-movie_desc-group_similarity.json').read_text())
    correlation = meta['AccuracyCorrelation']
    assert correlation['NumberOfCNNs'] == 3
    assert correlation['Descriptive'] is True
    assert 'exact' in correlation['PermutationTest']
    for cnn, layer in CNNS.items():
        label = cnn.replace('_', '')
        layer_label = layer.replace('.', '')
        assert (out / f'task-movie_space-MNI152NLin2009cAsym_cnn-{label}_layer-{layer_label}'
                '_desc-group_annotations.tsv').is_file()  # fmt: skip
