"""Stimulus features: frames forwarded per second end to end against the bare forward pass.

DESIGN.md section 9. A 1-minute 480p (854x480) 24 fps H.264 movie of natural photographs is
made once (seeded). For AlexNet and ResNet-18 (seeded random weights: the same arithmetic as
pretrained ones) and for ``--frame-rate 4`` and ``native``, in one run and side by side:

- end to end: ``iter_frames`` (PyAV decode by PTS, fit with swscale) in a background thread
  through ``prefetch``, then ``extract_activations`` (normalise, batched forward under
  ``inference_mode``, spatial means of every preset layer);
- bare: the model's full forward pass over the same frames, already decoded, fitted and
  normalised in memory, with the same batch size.

The ratio is end-to-end frames per second over bare frames per second (target >= 0.8).

Usage: ``python benchmarks/bench_features.py [--seconds 60] [--repeats 2] [--out results.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from bids_syncact._demo import movie as demo_movie
from bids_syncact.core import cnn as cnns
from bids_syncact.core.activations import DEFAULT_BATCH_SIZE, extract_activations, normalise
from bids_syncact.core.video import FrameFit, iter_frames, prefetch, probe_video

WIDTH, HEIGHT, FPS = 854, 480, 24


def make_movie(path: Path, seconds: float) -> Path:
    """Write the seeded natural movie (H.264 when FFmpeg has it, else MPEG-4 part 2)."""
    rng = np.random.default_rng(0)
    photos = demo_movie.load_photos()
    shots = demo_movie.plan_shots(seconds, rng, len(photos))
    codec = 'libx264' if 'libx264' in av.codecs_available else 'mpeg4'
    with av.open(str(path), 'w') as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, 'yuv420p'
        for index, image in enumerate(
            demo_movie.render_frames(photos, shots, fps=FPS, size=(WIDTH, HEIGHT))
        ):
            frame = av.VideoFrame.from_ndarray(image, format='rgb24')
            frame.pts, frame.time_base = index, Fraction(1, FPS)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def end_to_end(path, cnn, model, rate, duration_s, threads=0) -> tuple[float, int]:
    """Decode, fit, normalise, forward and pool: wall seconds and frames forwarded."""
    norm = cnns.normalisation(cnn)
    fit = FrameFit('pad', norm.crop_size, norm.resize_size)
    recorder = cnns.UnitRecorder(model, cnns.preset_layers(cnn), relu_after=cnns.relu_after(cnn))
    start = time.perf_counter()
    frames = prefetch(iter_frames(path, rate, fit=fit, duration_s=duration_s, threads=threads))
    times, _ = extract_activations(frames, recorder, norm)
    return time.perf_counter() - start, len(times)


def bare(path, cnn, model, rate, duration_s, threads=0) -> tuple[float, int]:
    """The full forward pass alone over the same frames, prepared in memory beforehand."""
    norm = cnns.normalisation(cnn)
    fit = FrameFit('pad', norm.crop_size, norm.resize_size)
    images = np.stack([image for _, image in iter_frames(path, rate, fit=fit,
                                                          duration_s=duration_s)])  # fmt: skip
    batches = [normalise(images[i : i + DEFAULT_BATCH_SIZE], norm, 'cpu')
               for i in range(0, len(images), DEFAULT_BATCH_SIZE)]  # fmt: skip
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            model(batch)
    return time.perf_counter() - start, len(images)


def main() -> None:
    """Run the benchmark and print (and optionally save) the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seconds', type=float, default=60.0)
    parser.add_argument('--repeats', type=int, default=2, help='best of N for each timing')
    parser.add_argument('--cnn', nargs='+', default=['alexnet', 'resnet18'])
    parser.add_argument(
        '--decoder-threads',
        type=int,
        default=0,
        help='FFmpeg decoder threads (0: FFmpeg chooses; 1: one thread)',
    )
    parser.add_argument('--workdir', type=Path, default=Path('/tmp/bids-syncact-bench'))
    parser.add_argument('--out', type=Path)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    path = args.workdir / f'natural_{WIDTH}x{HEIGHT}_{FPS}fps_{args.seconds:g}s.mp4'
    if not path.exists():
        make_movie(path, args.seconds)
    info = probe_video(path)
    threads = {
        'torch_intra_op': torch.get_num_threads(), 'torch_inter_op': torch.get_num_interop_threads(),
        'decoder': f'1 Python thread (prefetch) + FFmpeg threads: {args.decoder_threads or "auto"}',
        'cpu_count': os.cpu_count(),
    }  # fmt: skip
    print(f'movie: {info.width}x{info.height} {info.codec}, {info.duration_s:.1f} s, '
          f'{info.average_rate_hz} fps; threads: {threads}')  # fmt: skip
    rows = []
    for cnn in args.cnn:
        model = cnns.build_model(cnn, cnns.Weights('none', 'none', seed=0))
        for rate in (4.0, None):
            timings = {}
            for name, measure in (('end_to_end', end_to_end), ('bare', bare)):
                runs = [measure(path, cnn, model, rate, info.duration_s, args.decoder_threads)
                        for _ in range(args.repeats)]  # fmt: skip
                seconds, frames = min(runs)
                timings[name] = (seconds, frames, frames / seconds)
            ratio = timings['end_to_end'][2] / timings['bare'][2]
            row = {
                'cnn': cnn, 'frame_rate': rate or 'native', 'frames': timings['bare'][1],
                'end_to_end_s': round(timings['end_to_end'][0], 2),
                'end_to_end_fps': round(timings['end_to_end'][2], 1),
                'bare_s': round(timings['bare'][0], 2), 'bare_fps': round(timings['bare'][2], 1),
                'ratio': round(ratio, 3),
            }  # fmt: skip
            rows.append(row)
            print(json.dumps(row))
    result = {'machine': platform.processor() or platform.machine(), 'threads': threads,
              'movie': {'width': info.width, 'height': info.height, 'codec': info.codec,
                        'duration_s': info.duration_s, 'fps': FPS},
              'torch': torch.__version__, 'rows': rows}  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + '\n')


if __name__ == '__main__':
    main()
