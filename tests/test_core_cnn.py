"""CNN units: presets, hooks that in-place ops cannot corrupt, weights, normalisation, selection."""

from __future__ import annotations

import pickle
from fractions import Fraction
from pathlib import Path
from unittest import mock

import av
import numpy as np
import pytest
import torch
from torchvision.models import get_model

from bids_syncact.core import cnn as cnns
from bids_syncact.core.activations import (
    blank_activations,
    extract_activations,
    normalise,
    select_units,
)
from bids_syncact.core.video import BLANK_LEVEL, FrameFit, fitted, iter_frames
from bids_syncact.errors import InputDataError, MissingInputError, UsageError

#: One CNN of each family: small input sizes keep a real forward pass fast.
FAMILIES = ['alexnet', 'vgg11', 'resnet18', 'densenet121', 'squeezenet1_1', 'mobilenet_v3_small',
            'efficientnet_b0', 'convnext_tiny']  # fmt: skip
RELU_FAMILIES = ['alexnet', 'vgg11', 'resnet18', 'densenet121', 'squeezenet1_1']


@pytest.mark.parametrize('cnn', cnns.cnn_names())
def test_every_preset_names_channel_maps_that_shrink_stage_by_stage(cnn):
    layers = cnns.preset_layers(cnn)
    assert len(layers) >= 4
    n_units = cnns.shape_check(cnn, layers, 224)  # meta device: shapes only, each run once
    assert all(n > 0 for n in n_units.values())
    with torch.device('meta'):
        model = get_model(cnn, weights=None).eval()
    sizes = {}

    def keep(layer):
        def hook(_module, _inputs, output):
            sizes[layer] = output.shape[-1]  # returns None: the output is left alone

        return hook

    handles = [dict(model.named_modules())[layer].register_forward_hook(keep(layer))
               for layer in layers]  # fmt: skip
    with torch.inference_mode():
        model(torch.zeros(1, 3, 224, 224, device='meta'))
    for handle in handles:
        handle.remove()
    widths = [sizes[layer] for layer in layers]
    assert widths == sorted(widths, reverse=True), widths  # the end of each main stage, in order
    assert cnns.normalisation(cnn).crop_size >= 224


@pytest.mark.parametrize('cnn', RELU_FAMILIES)
def test_post_relu_presets_give_non_negative_units(cnn):
    model = cnns.build_model(cnn, cnns.Weights('none', 'none', seed=0))
    recorder = cnns.UnitRecorder(model, cnns.preset_layers(cnn), relu_after=cnns.relu_after(cnn))
    with recorder, torch.inference_mode():
        means = recorder.forward(
            torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
        )
    for layer, values in means.items():
        assert values.min() >= 0, (cnn, layer)  # the map after a ReLU, not before it


def test_in_place_relu_after_the_hooked_module_does_not_change_what_was_captured():
    model = cnns.build_model('alexnet', cnns.Weights('none', 'none', seed=0))
    batch = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        conv_means = model.features[0](batch).mean(dim=(2, 3))  # before ReLU(inplace=True)
    recorder = cnns.UnitRecorder(model, ['features.0', 'features.1'])
    with recorder, torch.inference_mode():
        means = recorder.forward(batch)
    assert conv_means.min() < 0  # a ReLU overwriting the captured tensor would make these >= 0
    torch.testing.assert_close(means['features.0'], conv_means)
    assert means['features.1'].min() >= 0


@pytest.mark.parametrize(('cnn', 'layers', 'fragment'), [
    ('resnet18', ['layer1.0.relu'], 'runs more than once'),
    ('resnet18', ['fc'], 'does not output channel maps'),
    ('resnet18', ['layer9'], 'preset relu layer1 layer2 layer3 layer4'),
])  # fmt: skip
def test_bad_layers_are_refused_with_what_to_use(cnn, layers, fragment):
    with pytest.raises(UsageError, match=fragment):
        cnns.shape_check(cnn, layers, 224)


def test_unknown_cnn_is_refused_with_the_list():
    with pytest.raises(UsageError, match='alexnet, convnext_base') as raised:
        cnns.check_cnn('inception_v3')
    assert 'resnet18' in str(raised.value)


def _activations(model, cnn='alexnet', layers=('features.1', 'features.11')):
    batch = torch.randn(3, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    with cnns.UnitRecorder(model, layers) as recorder, torch.inference_mode():
        return {k: v.clone() for k, v in recorder.forward(batch).items()}


def test_none_weights_are_seeded_and_flagged():
    a = cnns.resolve_weights('alexnet', 'none', seed=3)
    assert a.random
    assert a.seed == 3
    first = _activations(cnns.build_model('alexnet', a))
    again = _activations(
        cnns.build_model('alexnet', cnns.resolve_weights('alexnet', 'none', seed=3))
    )
    other = _activations(
        cnns.build_model('alexnet', cnns.resolve_weights('alexnet', 'none', seed=4))
    )
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.allclose(first['features.11'], other['features.11'])


def test_a_state_dict_file_gives_the_saved_network(tmp_path):
    model = cnns.build_model('alexnet', cnns.Weights('none', 'none', seed=5))
    path = tmp_path / 'alexnet.pth'
    torch.save(model.state_dict(), path)
    weights = cnns.resolve_weights('alexnet', str(path))
    assert weights.kind == 'path'
    assert weights.path == path
    assert not weights.random
    torch.testing.assert_close(_activations(cnns.build_model('alexnet', weights)),
                               _activations(model))  # fmt: skip


class _Payload:
    """Unpickling this runs ``Path(target).touch()``."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_pickled_code_in_a_weights_file_is_never_run(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    torch.save({'features.0.weight': torch.zeros(1), 'x': _Payload(marker)}, path)
    with pytest.raises(InputDataError, match='not a plain state_dict'):
        cnns.resolve_weights('alexnet', str(path))
    assert not marker.exists()
    with path.open('wb') as stream:  # a bare pickle, not even a torch file
        pickle.dump(_Payload(marker), stream)
    with pytest.raises(InputDataError, match='nothing in it was run'):
        cnns.resolve_weights('alexnet', str(path))
    assert not marker.exists()


def test_weights_of_another_network_or_not_a_state_dict_are_refused(tmp_path):
    path = tmp_path / 'resnet.pth'
    torch.save(get_model('resnet18', weights=None).state_dict(), path)
    with pytest.raises(InputDataError, match='not a state_dict of torchvision alexnet'):
        cnns.resolve_weights('alexnet', str(path))
    torch.save([torch.zeros(2)], path)
    with pytest.raises(InputDataError, match='holds a list'):
        cnns.resolve_weights('alexnet', str(path))
    with pytest.raises(MissingInputError, match='no such file'):
        cnns.resolve_weights('alexnet', str(tmp_path / 'absent.pth'))


def test_default_weights_offline_fail_in_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    offline = OSError('Name or service not known')
    with (
        mock.patch('torchvision.models._api.WeightsEnum.get_state_dict', side_effect=offline),
        pytest.raises(MissingInputError) as raised,
    ):
        cnns.resolve_weights('alexnet', 'DEFAULT')
    message = str(raised.value)
    assert '\n' not in message
    assert 'AlexNet_Weights.IMAGENET1K_V1' in message
    assert str(tmp_path / 'torch') in message
    assert 'python -m bids_syncact.resources --cnn alexnet' in message


def test_default_weights_found_in_torch_home_are_used_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    model = cnns.build_model('alexnet', cnns.Weights('none', 'none', seed=6))
    path = cnns.checkpoint_path('alexnet')
    path.parent.mkdir(parents=True)
    torch.save(model.state_dict(), path)
    weights = cnns.resolve_weights('alexnet', 'DEFAULT')
    assert weights.kind == 'DEFAULT'
    assert weights.path == path
    torch.testing.assert_close(_activations(cnns.build_model('alexnet', weights)),
                               _activations(model))  # fmt: skip


def test_normalisation_comes_from_the_default_weights_transforms():
    norm = cnns.normalisation('alexnet')
    grey = np.full((1, 224, 224, 3), 255, np.uint8)
    batch = normalise(grey, norm, 'cpu')
    expected = [(1 - m) / s for m, s in zip(norm.mean, norm.std, strict=True)]
    np.testing.assert_allclose(batch[0, :, 5, 5].numpy(), expected, rtol=1e-6)
    assert batch.shape == (1, 3, 224, 224)


def _frame(width, height, colour=(255, 255, 255)):
    return av.VideoFrame.from_ndarray(np.full((height, width, 3), colour, np.uint8), 'rgb24')


def test_pad_keeps_the_whole_picture_on_grey_bars_crop_and_squash_fill():
    frame = _frame(200, 100)
    padded = fitted(frame, FrameFit('pad', 64, 73))
    assert padded.shape == (64, 64, 3)
    assert (padded[:16] == BLANK_LEVEL).all()
    assert (padded[48:] == BLANK_LEVEL).all()
    assert (padded[17:47] == 255).all()  # the picture, whole width
    for mode in ('crop', 'squash'):
        assert (fitted(frame, FrameFit(mode, 64, 73)) == 255).all()


def test_batches_and_blank_are_deterministic_and_shaped():
    model = cnns.build_model('alexnet', cnns.Weights('none', 'none', seed=0))
    norm = cnns.normalisation('alexnet')
    frames = [(i / 4, np.random.default_rng(i).integers(0, 256, (224, 224, 3), np.uint8))
              for i in range(5)]  # fmt: skip
    seen = []
    recorder = cnns.UnitRecorder(model, ['features.1', 'features.4'])
    times, acts = extract_activations(frames, recorder, norm, batch_size=2, progress=seen.append)
    _, again = extract_activations(frames, recorder, norm, batch_size=5)
    assert seen == [2, 2, 1]
    np.testing.assert_allclose(times, np.arange(5) / 4)
    assert acts['features.1'].shape == (5, 64)
    assert acts['features.4'].shape == (5, 192)
    np.testing.assert_allclose(acts['features.4'], again['features.4'], rtol=1e-5, atol=1e-6)
    blank = blank_activations(recorder, norm)
    assert blank['features.1'].shape == (64,)
    assert not np.allclose(blank['features.1'], acts['features.1'][0])


def test_units_with_the_largest_variance_ties_by_index(rng):
    acts = rng.normal(size=(50, 10)) * np.array([1, 5, 1, 5, 2, 0, 0, 3, 1, 1])
    assert select_units([acts[:20], acts[20:]], 3).tolist() == [1, 3, 7]
    ties = np.tile([[0.0, 1, 1, 0]], (4, 1)) * np.array([[1], [-1], [1], [-1]])
    assert select_units([ties], 1).tolist() == [1]  # units 1 and 2 tie: the lower index
    assert select_units([acts], None).tolist() == list(range(10))


def _clip_with_cuts(path, cut_times, colours, fps=8, length_s=6.0):
    with av.open(str(path), 'w') as container:
        stream = container.add_stream('mpeg4', rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, 'yuv420p'
        for index in range(int(length_s * fps)):
            time_s = index / fps
            scene = int(np.searchsorted(cut_times, time_s, side='right'))
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), colours[scene], np.uint8),
                                               'rgb24')  # fmt: skip
            frame.pts, frame.time_base = index, Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_a_clip_with_two_scene_cuts_gives_unit_steps_at_the_cuts(tmp_path):
    path = tmp_path / 'cuts.mp4'
    _clip_with_cuts(path, [2.0, 4.0], [(200, 30, 30), (30, 200, 30), (30, 30, 200)])
    model = cnns.build_model('alexnet', cnns.Weights('none', 'none', seed=0))
    norm = cnns.normalisation('alexnet')
    fit = FrameFit('pad', norm.crop_size, norm.resize_size)
    recorder = cnns.UnitRecorder(model, ['features.4'])
    times, acts = extract_activations(iter_frames(path, 4.0, fit=fit), recorder, norm)
    change = np.abs(np.diff(acts['features.4'], axis=0)).max(axis=1)
    steps = times[1:][change > 1e-3 * np.abs(acts['features.4']).max()]
    np.testing.assert_allclose(steps, [2.0, 4.0])  # constant within a scene, a step at each cut


@pytest.mark.slow
def test_four_hertz_agrees_with_native_after_sync_on_a_natural_movie(tmp_path):
    from bids_syncact._demo import movie as demo_movie
    from bids_syncact.core.sync import synchronize
    from bids_syncact.core.video import probe_video

    rng = np.random.default_rng(1)
    photos = demo_movie.load_photos()
    shots = demo_movie.plan_shots(40.0, rng, len(photos))
    frames = demo_movie.render_frames(photos, shots, fps=12, size=(96, 72))
    path = demo_movie.write_movie_file(frames, tmp_path / 'natural.mp4', fps=12)
    duration = probe_video(path).duration_s
    model = cnns.build_model('alexnet', cnns.Weights('none', 'none', seed=0))
    norm = cnns.normalisation('alexnet')
    fit = FrameFit('pad', norm.crop_size, norm.resize_size)
    recorder = cnns.UnitRecorder(model, ['features.4'])
    blank = blank_activations(recorder, norm)['features.4']
    acq = np.arange(50) + 0.5
    series = {}
    for rate in (None, 4.0):
        times, acts = extract_activations(iter_frames(path, rate, fit=fit), recorder, norm)
        series[rate] = synchronize(acts['features.4'], times, blank, onset=3.0, acq_times=acq,
                                   duration_s=duration)  # fmt: skip
    units = select_units([series[None]], 16)  # the units that move most
    r = [np.corrcoef(series[None][:, k], series[4.0][:, k])[0, 1] for k in units]
    assert min(r) > 0.99, r
