"""Pretrained weights and TemplateFlow files the app uses, fetched at image build time.

``python -m bids_syncact.resources [--offline]`` downloads them into ``TORCH_HOME`` and
``TEMPLATEFLOW_HOME`` (the container sets both outside ``HOME``). With ``--offline`` nothing is
downloaded: every weights enum and template query is resolved and listed, which fails loudly when
torchvision or TemplateFlow renamed something. The install script runs it (DESIGN.md section 7).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

#: The CNN families with layer presets, and the torchvision weights enum of each (its DEFAULT).
CNN_WEIGHTS: dict[str, str] = {
    'alexnet': 'AlexNet_Weights',
    'vgg16': 'VGG16_Weights',
    'resnet18': 'ResNet18_Weights',
    'resnet50': 'ResNet50_Weights',
    'densenet121': 'DenseNet121_Weights',
    'squeezenet1_1': 'SqueezeNet1_1_Weights',
    'mobilenet_v3_large': 'MobileNet_V3_Large_Weights',
    'efficientnet_b0': 'EfficientNet_B0_Weights',
    'convnext_tiny': 'ConvNeXt_Tiny_Weights',
}

#: TemplateFlow files: the output space's brain mask and the default reference networks.
TEMPLATEFLOW_QUERIES: tuple[dict[str, object], ...] = (
    {'template': 'MNI152NLin2009cAsym', 'resolution': 2, 'desc': 'brain', 'suffix': 'mask'},
    {'template': 'MNI152NLin2009cAsym', 'resolution': 2, 'suffix': 'T1w', 'desc': None},
    {'template': 'MNI152NLin2009cAsym', 'resolution': 2, 'atlas': 'Schaefer2018',
     'desc': '400Parcels7Networks', 'suffix': 'dseg', 'extension': '.nii.gz'},
    {'template': 'MNI152NLin2009cAsym', 'atlas': 'Schaefer2018', 'desc': '400Parcels7Networks',
     'suffix': 'dseg', 'extension': '.tsv'},
)  # fmt: skip


def default_weights(cnn: str):
    """Return the DEFAULT weights enum member of a preset CNN family."""
    from torchvision.models import get_weight

    return get_weight(f'{CNN_WEIGHTS[cnn]}.DEFAULT')


def fetch(*, offline: bool, cnns: Sequence[str] = tuple(CNN_WEIGHTS)) -> list[str]:
    """Download (or, offline, resolve and list) the weights and templates.

    Returns
    -------
    list of str
        One line per resource: what it is and where it goes.
    """
    lines = []
    torch_home = os.environ.get('TORCH_HOME', '~/.cache/torch (TORCH_HOME unset)')
    for cnn in cnns:
        weights = default_weights(cnn)
        lines.append(f'weights {cnn}: {weights} {weights.url} -> {torch_home}')
        if not offline:
            weights.get_state_dict(progress=False, check_hash=True)
    for query in TEMPLATEFLOW_QUERIES:
        described = ' '.join(f'{k}={v}' for k, v in query.items())
        from templateflow import api

        # ls() reads TemplateFlow's skeleton (no download); get() downloads.
        files = (api.ls if offline else api.get)(**query)
        files = files if isinstance(files, list) else [files]
        if len(files) != 1:
            raise RuntimeError(f'TemplateFlow has {len(files)} files for {described}, not 1')
        lines.append(f'templateflow {described}: {files[0]}')
    return lines


def main(argv: list[str] | None = None) -> int:
    """Fetch (or list, with ``--offline``) the resources; exit 1 with one line on failure."""
    parser = argparse.ArgumentParser(prog='python -m bids_syncact.resources',
                                     description=__doc__.split('\n')[0])  # fmt: skip
    parser.add_argument('--offline', action='store_true', help='resolve and list, no download')
    parser.add_argument('--cnn', nargs='+', choices=sorted(CNN_WEIGHTS), default=list(CNN_WEIGHTS))
    args = parser.parse_args(argv)
    try:
        for line in fetch(offline=args.offline, cnns=args.cnn):
            print(line)
    except Exception as err:  # noqa: BLE001 - one line for the build log
        print(f'resources: {type(err).__name__}: {err}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
