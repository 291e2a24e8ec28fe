"""Movie files read with PyAV, by their real timestamps (PTS).

:func:`probe_video` reads a movie's length from the container; :func:`iter_frames` decodes the
frames on screen at each tick of a sampling rate (or every frame), variable frame rates included;
:func:`prefetch` runs any frame iterator in a background thread so the model rarely waits.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np

VIDEO_EXTENSIONS = frozenset({'.mp4', '.mkv', '.avi', '.mov', '.webm', '.mpg'})
IMAGE_EXTENSIONS = frozenset({'.png', '.jpg', '.jpeg', '.bmp', '.gif', '.tif', '.tiff', '.webp'})
#: Grey level (0-255) of the blank screen, and of the bars ``pad`` adds around a frame.
BLANK_LEVEL = 128
#: FFmpeg's swscale filter for resizing: an area average, antialiased when shrinking.
RESAMPLER = 'AREA'


@dataclass(frozen=True)
class FrameFit:
    """How a frame is fitted to a square network input (``--frame-fit``)."""

    mode: Literal['pad', 'crop', 'squash']
    """``pad``: the whole frame, scaled to fit, on mid-grey bars (letterbox); ``crop``:
    torchvision's resize of the shorter side then centre crop; ``squash``: both sides scaled."""
    size: int
    """Side of the network input (px)."""
    resize: int
    """Shorter side before the centre crop (``crop`` only)."""


def fit_geometry(width: int, height: int, fit: FrameFit) -> tuple[int, int, int, int]:
    """Where a frame goes on the square input: ``(scaled_w, scaled_h, x, y)``.

    The frame is resized to ``scaled_w x scaled_h`` and its top-left corner placed at ``(x, y)``
    on the ``size x size`` input: ``x, y >= 0`` leave bars (pad), negative values cut (crop).

    >>> fit_geometry(640, 480, FrameFit('pad', 224, 256))
    (224, 168, 0, 28)
    >>> fit_geometry(640, 480, FrameFit('crop', 224, 256))
    (341, 256, -58, -16)
    >>> fit_geometry(640, 480, FrameFit('squash', 224, 256))
    (224, 224, 0, 0)
    """
    if width < 1 or height < 1:
        raise ValueError(f'a frame of {width}x{height} px')
    if fit.mode == 'squash':
        return fit.size, fit.size, 0, 0
    if fit.mode == 'pad':
        scale = fit.size / max(width, height)
    elif fit.mode == 'crop':
        scale = fit.resize / min(width, height)
    else:
        raise ValueError(f'unknown frame fit {fit.mode!r}')
    if fit.mode == 'crop':  # torchvision's resize: the shorter side exact, the longer truncated
        scaled_w = fit.resize if width <= height else int(fit.resize * width / height)
        scaled_h = fit.resize if height <= width else int(fit.resize * height / width)
    else:
        scaled_w, scaled_h = max(1, round(width * scale)), max(1, round(height * scale))
    # torchvision's center_crop rounds the same way: int(round((side - size) / 2))
    x, y = (round((fit.size - side) / 2.0) for side in (scaled_w, scaled_h))
    return scaled_w, scaled_h, x, y


def fitted(frame: av.VideoFrame, fit: FrameFit | None) -> np.ndarray:
    """RGB uint8 array of a decoded frame, fitted to the network input when ``fit`` is given."""
    if fit is None:
        return frame.to_ndarray(format='rgb24')
    scaled_w, scaled_h, x, y = fit_geometry(frame.width, frame.height, fit)
    image = frame.to_ndarray(
        width=scaled_w, height=scaled_h, format='rgb24', interpolation=RESAMPLER
    )
    canvas = np.full((fit.size, fit.size, 3), BLANK_LEVEL, dtype=np.uint8)
    top, left = max(y, 0), max(x, 0)
    source = image[max(-y, 0) : max(-y, 0) + fit.size, max(-x, 0) : max(-x, 0) + fit.size]
    canvas[top : top + source.shape[0], left : left + source.shape[1]] = source
    return canvas


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a movie's first video stream."""

    duration_s: float
    """From the first frame's start to the last frame's end (s)."""
    width: int
    height: int
    average_rate_hz: float | None
    """Average frame rate; None when the container does not tell (variable frame rate)."""
    codec: str


def probe_video(path: str | Path) -> VideoInfo:
    """Read a movie's duration and size without decoding frames.

    The duration comes from the stream header when present, else from the packet timestamps
    (demuxing only, no decoding), so variable-frame-rate files are measured by their PTS.

    Parameters
    ----------
    path : str or Path
        A movie file PyAV (FFmpeg) can open.

    Returns
    -------
    VideoInfo

    Raises
    ------
    ValueError
        The file cannot be opened as a movie, has no video stream, or no frame with a timestamp.
    """
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError('no video stream')
            stream = container.streams.video[0]
            duration_s = _packet_duration(container, stream)
            rate = stream.average_rate
            return VideoInfo(
                duration_s=duration_s,
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                average_rate_hz=float(rate) if rate else None,
                codec=stream.codec_context.name,
            )
    except av.FFmpegError as err:
        raise ValueError(f'not a readable movie ({err.strerror or err})') from err


def _packet_duration(
    container: av.container.Container, stream: av.video.stream.VideoStream
) -> float:
    """Return the video stream's end (s from its start), from its own packets.

    Not the container's duration, which includes audio, nor a header that may be rounded.
    """
    time_base = stream.time_base or Fraction(1, av.time_base)
    first, last = None, None
    for packet in container.demux(stream):
        if packet.pts is None:
            continue
        end = packet.pts + (packet.duration or 0)
        first = packet.pts if first is None else min(first, packet.pts)
        last = end if last is None else max(last, end)
    if first is None or last is None or last <= first:
        raise ValueError('no video frame with a timestamp')
    origin = stream.start_time if stream.start_time is not None else first
    return float((last - origin) * time_base)


def iter_frames(
    path: str | Path,
    rate_hz: float | None = None,
    *,
    fit: FrameFit | None = None,
    duration_s: float | None = None,
    threads: int = 0,
) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(time_s, frame)``: the frame on screen at each tick, by presentation timestamps.

    Frames are converted (and fitted) only when yielded, so sampling a 24 fps movie at 4 Hz
    converts one decoded frame in six. An image file yields one frame at 0 s.

    Parameters
    ----------
    path : str or Path
        A movie PyAV can decode.
    rate_hz : float or None
        Ticks at ``k / rate_hz`` s from the movie's start, each given the last frame shown at or
        before it (held until the next frame): a variable frame rate is sampled as it played.
        None ("native"): every frame, at its own time.
    fit : FrameFit, optional
        Fit each frame to the network input (in this thread, with FFmpeg's swscale).
    duration_s : float, optional
        The movie's length when already probed (the last frame is held until then).
    threads : int
        FFmpeg decoder threads: 0 lets FFmpeg choose (frame and slice threads, one per core),
        1 decodes in the calling thread only (leaves the cores to the model).

    Yields
    ------
    time_s : float
        Seconds from the movie's start (the first frame's timestamp is 0).
    frame : ndarray of shape (height, width, 3) or (size, size, 3)
        RGB, uint8.
    """
    if Path(path).suffix.lower() in IMAGE_EXTENSIONS:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                yield 0.0, fitted(frame, fit)
                return
        raise ValueError('no image in the file')
    if rate_hz is not None and duration_s is None:
        duration_s = probe_video(path).duration_s
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if threads != 1:
            stream.thread_type = 'AUTO'
            stream.codec_context.thread_count = threads
        origin = None
        if stream.start_time is not None and stream.time_base:
            origin = float(stream.start_time * stream.time_base)
        tick, shown, image, previous = 0, None, None, None
        for index, frame in enumerate(container.decode(stream)):
            if frame.time is None:
                raise ValueError(f'frame {index} has no timestamp: re-encode the movie')
            origin = frame.time if origin is None else origin
            time_s = frame.time - origin
            if previous is not None and time_s <= previous:
                raise ValueError(
                    f'timestamps do not increase at frame {index} ({time_s:.3f} s after '
                    f'{previous:.3f} s): re-encode, e.g. ffmpeg -i IN -c:v libx264 OUT.mp4'
                )
            previous = time_s
            if rate_hz is None:
                yield time_s, fitted(frame, fit)
                continue
            while shown is not None and tick / rate_hz < time_s - 1e-9:
                image = fitted(shown, fit) if image is None else image
                yield tick / rate_hz, image
                tick += 1
            shown, image = frame, None
        if rate_hz is None or shown is None:
            return
        end_s = max(float(duration_s or 0.0), previous + 1e-6)
        while tick / rate_hz < end_s - 1e-9:  # the last frame is held
            image = fitted(shown, fit) if image is None else image
            yield tick / rate_hz, image
            tick += 1


_DONE = object()


def prefetch(frames: Iterator, maxsize: int = 64) -> Iterator:
    """Run an iterator in a background thread, ``maxsize`` items ahead; errors are re-raised.

    >>> list(prefetch(iter(range(5)), maxsize=2))
    [0, 1, 2, 3, 4]
    """
    items: queue.Queue = queue.Queue(maxsize=maxsize)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in frames:
                if stop.is_set():
                    return
                items.put(item)
            items.put(_DONE)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            items.put(err)

    worker = threading.Thread(target=produce, name='frame-decoder', daemon=True)
    worker.start()
    try:
        while (item := items.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                items.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.05)
