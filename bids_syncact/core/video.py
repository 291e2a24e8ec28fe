"""Movie files read with PyAV, by their real timestamps.

Only probing lives here for now: how long a movie is, read from the container (no decoding).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

VIDEO_EXTENSIONS = frozenset({'.mp4', '.mkv', '.avi', '.mov', '.webm', '.mpg'})
IMAGE_EXTENSIONS = frozenset({'.png', '.jpg', '.jpeg', '.bmp', '.gif', '.tif', '.tiff', '.webp'})


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
            duration_s = _header_duration(stream, container)
            if duration_s is None:
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


def _header_duration(
    stream: av.video.stream.VideoStream, container: av.container.Container
) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def _packet_duration(
    container: av.container.Container, stream: av.video.stream.VideoStream
) -> float:
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
    return float((last - first) * time_base)
