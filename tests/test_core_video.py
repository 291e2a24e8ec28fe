"""Decoding by presentation timestamps: variable frame rates, ticks, native, prefetching."""

from __future__ import annotations

import threading
from fractions import Fraction

import av
import numpy as np
import pytest

from bids_syncact._demo import movie as demo_movie
from bids_syncact.core.sync import synchronize
from bids_syncact.core.video import iter_frames, prefetch, probe_video

VFR_TIMES = [0.0, 0.1, 0.5, 0.55, 2.0, 2.6]
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]


@pytest.fixture(scope='module')
def vfr_movie(tmp_path_factory):
    """Six solid frames at irregular times (ms time base): a variable-frame-rate movie."""
    path = tmp_path_factory.mktemp('vfr') / 'vfr.mp4'
    with av.open(str(path), 'w') as container:
        stream = container.add_stream('mpeg4', rate=1000)
        stream.width, stream.height, stream.pix_fmt = 64, 48, 'yuv420p'
        stream.codec_context.time_base = Fraction(1, 1000)
        for time_s, colour in zip(VFR_TIMES, COLOURS, strict=True):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), colour, np.uint8), 'rgb24')
            frame.pts, frame.time_base = round(time_s * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _which(frame):
    distances = [np.abs(frame[0, 0].astype(int) - c).sum() for c in COLOURS]
    return int(np.argmin(distances))


def test_native_gives_every_frame_at_its_own_time(vfr_movie):
    frames = list(iter_frames(vfr_movie))
    assert [round(t, 3) for t, _ in frames] == VFR_TIMES
    assert [_which(f) for _, f in frames] == list(range(6))


def test_ticks_get_the_frame_on_screen(vfr_movie):
    frames = list(iter_frames(vfr_movie, rate_hz=4.0))
    duration = probe_video(vfr_movie).duration_s
    assert [t for t, _ in frames] == [k / 4 for k in range(int(np.ceil(duration * 4)))]
    # 0: red; 0.25: green (0.1); 0.5: blue (exactly 0.5); 0.75-1.75: yellow (0.55); 2-2.5: cyan
    assert [_which(f) for _, f in frames] == [0, 1, 2, 3, 3, 3, 3, 3, 4, 4, 4]


def test_four_hertz_agrees_with_native_on_a_natural_movie(tmp_path):
    rng = np.random.default_rng(0)
    photos = demo_movie.load_photos()
    shots = demo_movie.plan_shots(40.0, rng, len(photos))
    path = demo_movie.write_movie_file(
        demo_movie.render_frames(photos, shots, fps=24, size=(96, 72)), tmp_path / 'm.mp4', fps=24
    )
    duration = probe_video(path).duration_s
    acq = np.arange(50) + 0.5
    series = {}
    for rate in (None, 4.0):
        times, frames = zip(*iter_frames(path, rate_hz=rate), strict=True)
        feature = np.array([[f.mean(), f[..., 0].std()] for f in frames])  # luminance, contrast
        series[rate] = synchronize(feature, np.array(times), feature.mean(axis=0), onset=3.0,
                                   acq_times=acq, duration_s=duration)  # fmt: skip
    for k in range(2):
        assert np.corrcoef(series[None][:, k], series[4.0][:, k])[0, 1] > 0.99


def test_prefetch_reraises_the_producer_s_error():
    def broken():
        yield 1
        raise OSError('disk gone')

    stream = prefetch(broken())
    assert next(stream) == 1
    with pytest.raises(OSError, match='disk gone'):
        next(stream)


def test_prefetch_stops_its_thread_when_the_consumer_stops():
    stream = prefetch(iter(range(10_000)), maxsize=2)
    assert next(stream) == 0
    stream.close()
    assert not [t for t in threading.enumerate() if t.name == 'frame-decoder' and t.is_alive()]


def test_audio_longer_than_the_video_does_not_lengthen_the_movie(tmp_path):
    """Matroska keeps no video duration: the container's (audio included) must not be used."""
    path = tmp_path / 'av.mkv'
    with av.open(str(path), 'w') as container:
        video = container.add_stream('mpeg4', rate=8)
        video.width, video.height, video.pix_fmt = 32, 24, 'yuv420p'
        audio = container.add_stream('pcm_s16le', rate=8000, layout='mono')
        for index in range(16):  # 2 s of video
            frame = av.VideoFrame.from_ndarray(np.full((24, 32, 3), index * 10, np.uint8), 'rgb24')
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        for second in range(5):  # 5 s of audio
            samples = np.zeros((1, 8000), np.int16)
            chunk = av.AudioFrame.from_ndarray(samples, format='s16', layout='mono')
            chunk.sample_rate, chunk.pts = 8000, second * 8000
            for packet in audio.encode(chunk):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)
    with av.open(str(path)) as check:
        assert check.duration / av.time_base > 4.5  # the container says 5 s
    assert probe_video(path).duration_s == pytest.approx(2.0, abs=0.15)
    ticks = list(iter_frames(path, rate_hz=4.0))
    assert ticks[-1][0] < 2.0
