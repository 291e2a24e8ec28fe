"""Torchvision CNNs: layer presets, weights, input normalisation (DESIGN.md section 2.1).

A CNN is named as in :func:`torchvision.models.get_model`; only families with a layer preset in
``bids_syncact/data/layer_presets.json`` are accepted, because a preset says which module outputs
are the post-ReLU maps (or, in ReLU-free families, the stage outputs) of the main stages. Weights
are torchvision's DEFAULT (from ``TORCH_HOME``; downloaded when online), ``none`` (a seeded random
initialisation, for tests), or a file holding a ``state_dict``, read with ``weights_only=True`` so
that no pickled code is ever run. Frames are always normalised with the DEFAULT weights'
transforms, whatever the weights.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

import torch
from torch import nn
from torchvision.models import get_model, get_model_weights

from bids_syncact.core.presets import (
    check_cnn,
    cnn_names,  # noqa: F401 - re-exported
    presets,
)
from bids_syncact.errors import InputDataError, MissingInputError, UsageError

LOGGER = logging.getLogger('bids_syncact.cnn')


def preset_layers(cnn: str) -> tuple[str, ...]:
    """Return the modules captured by default: the end of each main stage.

    >>> preset_layers('alexnet')
    ('features.1', 'features.4', 'features.7', 'features.9', 'features.11')
    """
    check_cnn(cnn)
    return tuple(presets()[cnn]['layers'])


def relu_after(cnn: str) -> frozenset[str]:
    """Modules followed by a functional ReLU in ``forward()`` (applied to the captured map)."""
    return frozenset(presets()[cnn].get('relu_after', ()))


@dataclass(frozen=True)
class Normalisation:
    """Input size and normalisation of a CNN's DEFAULT weights' transforms."""

    weights_enum: str
    """e.g. ``AlexNet_Weights.IMAGENET1K_V1``."""
    crop_size: int
    """Side of the square network input (px)."""
    resize_size: int
    """Shorter side before the centre crop of ``--frame-fit crop`` (px)."""
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def normalisation(cnn: str) -> Normalisation:
    """Read the DEFAULT weights' transforms (offline: metadata only, no download).

    >>> normalisation('alexnet').crop_size, normalisation('alexnet').mean
    (224, (0.485, 0.456, 0.406))
    """
    weights = get_model_weights(cnn).DEFAULT
    transforms = weights.transforms()
    return Normalisation(
        weights_enum=str(weights),
        crop_size=int(transforms.crop_size[0]),
        resize_size=int(transforms.resize_size[0]),
        mean=tuple(float(v) for v in transforms.mean),  # type: ignore[arg-type]
        std=tuple(float(v) for v in transforms.std),  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class Weights:
    """Which parameters a CNN runs with."""

    kind: Literal['DEFAULT', 'none', 'path']
    name: str
    """The enum (``AlexNet_Weights.IMAGENET1K_V1``), ``none``, or the file name."""
    path: Path | None = None
    """The file read (DEFAULT: the checkpoint in TORCH_HOME)."""
    seed: int | None = None
    """Seed of the random initialisation (``none``)."""

    @property
    def random(self) -> bool:
        """Whether the parameters are a random initialisation (not a trained network)."""
        return self.kind == 'none'


def resolve_device(device: str) -> torch.device:
    """Turn ``--device auto|cpu|cuda`` into a device; call it in the worker, never the parent.

    Raises
    ------
    UsageError
        ``cuda`` asked for and no CUDA device is visible (exit 64).
    """
    if device == 'cpu':
        return torch.device('cpu')
    available = torch.cuda.is_available()
    if device == 'cuda' and not available:
        raise UsageError(
            '--device cuda: torch sees no CUDA device (check the driver, CUDA_VISIBLE_DEVICES, '
            'and docker --gpus / apptainer --nv): use --device cpu or auto'
        )
    return torch.device('cuda' if available else 'cpu')


def set_determinism() -> dict[str, Any]:
    """Ask torch for deterministic kernels and return the settings (for the sidecars)."""
    os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')  # deterministic cuBLAS
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)
    return {
        'DeterministicAlgorithms': torch.are_deterministic_algorithms_enabled(),
        'CudnnDeterministic': torch.backends.cudnn.deterministic,
        'CudnnBenchmark': torch.backends.cudnn.benchmark,
        'Threads': torch.get_num_threads(),
        'InteropThreads': torch.get_num_interop_threads(),
    }


def checkpoint_path(cnn: str) -> Path:
    """Where torchvision keeps the DEFAULT weights of ``cnn`` (under ``TORCH_HOME``)."""
    url = get_model_weights(cnn).DEFAULT.url
    return Path(torch.hub.get_dir()) / 'checkpoints' / Path(url).name


def resolve_weights(cnn: str, value: str, *, seed: int = 0) -> Weights:
    """Find the weights ``--weights`` names, downloading DEFAULT ones when they are missing.

    Parameters
    ----------
    cnn : str
        A CNN with a layer preset.
    value : str
        ``DEFAULT``, ``none`` or a path to a ``state_dict`` file.
    seed : int
        Seed of the random initialisation with ``none``.

    Raises
    ------
    MissingInputError
        DEFAULT weights absent and not downloadable, or no such file (exit 66).
    InputDataError
        The file is not a ``state_dict`` of this CNN (exit 65).
    """
    check_cnn(cnn)
    if value == 'none':
        LOGGER.info('%s: random weights (--weights none, seed %d)', cnn, seed)
        return Weights('none', 'none', seed=seed)
    if value.upper() == 'DEFAULT':
        enum = get_model_weights(cnn).DEFAULT
        path = checkpoint_path(cnn)
        if not path.is_file():
            try:  # torch.hub prints "Downloading: ..." on stdout: the log gets it instead
                with contextlib.redirect_stdout(io.StringIO()) as said:
                    enum.get_state_dict(progress=False, check_hash=True)
                LOGGER.info(said.getvalue().strip())
            except Exception as err:  # noqa: BLE001 - URLError, HTTPError, hash mismatch...
                raise MissingInputError(
                    f'pretrained weights {enum} of {cnn} are not in {path.parent} and could not '
                    f'be downloaded ({type(err).__name__}: {err}): run "python -m '
                    f'bids_syncact.resources --cnn {cnn}" where there is network, set TORCH_HOME '
                    f'to where they are, or give --weights {cnn}=PATH'
                ) from None
        return Weights('DEFAULT', str(enum), path=path)
    path = Path(value).expanduser().absolute()
    if not path.is_file():
        raise MissingInputError(f'--weights {cnn}={value}: no such file')
    weights = Weights('path', path.name, path=path)
    with torch.device('meta'):
        skeleton = get_model(cnn, weights=None)
    _load_into(skeleton, cnn, weights)  # refuse a wrong file now, before any job starts
    return weights


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a ``state_dict`` with ``weights_only=True``: tensors and containers, never code.

    Raises
    ------
    InputDataError
        Not a readable file of tensors by name (exit 65).
    """
    try:
        with warnings.catch_warnings():  # a refusal is one line, not a warning and a line
            warnings.simplefilter('ignore')
            state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError...
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputDataError(
            f'--weights {path} is not a plain state_dict ({reason[:200]}); nothing in it was '
            'run: save one with torch.save(model.state_dict(), PATH)'
        ) from None
    if isinstance(state, Mapping) and 'state_dict' in state and len(state) <= 4:
        state = state['state_dict']  # a training checkpoint around the state_dict
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise InputDataError(
            f'--weights {path} holds a {type(state).__name__}, not a state_dict (tensors by '
            'parameter name): save one with torch.save(model.state_dict(), PATH)'
        )
    return dict(state)


def _load_into(model: nn.Module, cnn: str, weights: Weights) -> None:
    assert weights.path is not None
    state = read_state_dict(weights.path)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        result = model.load_state_dict(state, strict=False, assign=True)
        missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
        detail = f'missing {missing[:3]}, unexpected {unexpected[:3]}'
        if not missing and not unexpected:
            detail = str(err).strip().splitlines()[-1].strip()[:200]
        raise InputDataError(
            f'--weights {weights.path} is not a state_dict of torchvision {cnn} ({detail}): '
            f'check --cnn, or save torchvision.models.{cnn}().state_dict()'
        ) from None


def build_model(cnn: str, weights: Weights, device: str | torch.device = 'cpu') -> nn.Module:
    """Make the CNN with its weights, in eval mode, on ``device``."""
    if weights.kind == 'none':
        torch.manual_seed(int(weights.seed or 0))
        model = get_model(cnn, weights=None)
    elif weights.kind == 'DEFAULT':
        # torchvision's own loader: it remaps old checkpoint keys (DenseNet) and checks the hash.
        model = get_model(cnn, weights=get_model_weights(cnn).DEFAULT)
    else:
        with torch.device('meta'):
            model = get_model(cnn, weights=None)
        _load_into(model, cnn, weights)
    return model.eval().to(device)


def check_layers(model: nn.Module, cnn: str, layers: Sequence[str]) -> None:
    """Refuse (exit 64) module names the model does not have, listing its preset and stages.

    Shapes and call counts are checked on the first batch (:class:`UnitRecorder`).
    """
    modules = dict(model.named_modules())
    unknown = [layer for layer in layers if layer not in modules]
    if unknown:
        stages = [name for name, _ in model.named_children()]
        raise UsageError(
            f'{cnn} has no module {", ".join(map(repr, unknown))}: use module names as in '
            f'{cnn}.named_modules(), e.g. its preset {" ".join(preset_layers(cnn))} (top-level '
            f'children: {" ".join(stages)})'
        )


def shape_check(cnn: str, layers: Sequence[str], crop_size: int) -> dict[str, int]:
    """Run a shape-only forward pass (meta device: no memory, no weights) over ``layers``.

    Returns
    -------
    dict
        Number of channels (units) of each layer.

    Raises
    ------
    UsageError
        A module that does not exist, does not output channel maps, or runs twice (exit 64).
    """
    check_cnn(cnn)
    with torch.device('meta'):
        skeleton = get_model(cnn, weights=None).eval()
    recorder = UnitRecorder(
        skeleton, layers, relu_after=relu_after(cnn), cnn=cnn, stop_early=False
    )
    with torch.inference_mode(), recorder:
        means = recorder.forward(torch.zeros(1, 3, crop_size, crop_size, device='meta'))
    return {layer: int(means[layer].shape[1]) for layer in layers}


class _AllCaptured(Exception):
    """Raised by the last hook: the rest of the network is not needed."""


class UnitRecorder:
    """Forward hooks that keep each layer's spatial mean per channel.

    The mean is taken inside the hook, the moment the module returns: the captured numbers are a
    new tensor that a later in-place operation (``ReLU(inplace=True)``, ``+=`` in a residual
    block) cannot overwrite. Once every layer is captured the forward pass stops, so the
    classifier head is not computed (``stop_early``). A module run more than once per forward
    pass (a ReLU shared inside a ResNet block) is refused: its output would be ambiguous (the
    check needs ``stop_early=False``, as in :func:`shape_check`).

    Use as a context manager; the hooks are removed on exit.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str],
        *,
        relu_after: frozenset[str] = frozenset(),
        cnn: str = 'the CNN',
        stop_early: bool = True,
    ) -> None:
        check_layers(model, cnn, layers)
        self.model, self.layers, self.cnn = model, tuple(layers), cnn
        self.stop_early = stop_early
        self._relu_after = relu_after
        self._modules = dict(model.named_modules())
        self._means: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> Self:
        for layer in self.layers:
            hook = self._hook(layer)
            self._handles.append(self._modules[layer].register_forward_hook(hook))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, layer: str) -> Any:
        def keep(module: nn.Module, inputs: Any, output: Any) -> None:
            if layer in self._means:
                raise UsageError(
                    f'{self.cnn} module {layer!r} runs more than once per forward pass (a '
                    'shared module): choose the block that contains it'
                )
            if not isinstance(output, torch.Tensor) or output.ndim != 4:
                shape = tuple(output.shape) if isinstance(output, torch.Tensor) else None
                raise UsageError(
                    f'{self.cnn} module {layer!r} does not output channel maps (N, C, H, W) but '
                    f'{shape or type(output).__name__}: choose a convolutional stage'
                )
            maps = torch.relu(output) if layer in self._relu_after else output
            self._means[layer] = maps.float().mean(dim=(2, 3))  # a new tensor: clone-safe
            if self.stop_early and len(self._means) == len(self.layers):
                raise _AllCaptured

        return keep

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return ``{layer: (n_frames, n_channels)}`` spatial means for a normalised batch."""
        self._means = {}
        try:
            self.model(batch)
        except _AllCaptured:
            pass
        missing = [layer for layer in self.layers if layer not in self._means]
        if missing:
            raise UsageError(
                f'{self.cnn} modules {", ".join(missing)} are not run by its forward pass: '
                'choose modules that are'
            )
        return self._means


def imagenet_top1(cnn: str, enum_name: str) -> float:
    """Return the ImageNet-1K top-1 accuracy (%) torchvision's weights metadata gives.

    Parameters
    ----------
    cnn : str
        The architecture (``alexnet``).
    enum_name : str
        The weights enum the sidecar records (``AlexNet_Weights.IMAGENET1K_V1``).

    >>> imagenet_top1('alexnet', 'AlexNet_Weights.IMAGENET1K_V1')
    56.522
    """
    member = enum_name.rsplit('.', 1)[-1]
    return float(get_model_weights(cnn)[member].meta['_metrics']['ImageNet-1K']['acc@1'])
