"""A natural-looking movie: pans, zooms and cuts over scikit-image's photographs, plus motion.

Frames are made in memory (what the subject "saw") and written with PyAV. The planted ground truth
is computed from these very frames, not from the decoded file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image

#: Photographs shipped inside scikit-image (no download).
PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket', 'hubble_deep_field',
          'immunohistochemistry', 'retina', 'camera', 'coins', 'moon', 'horse', 'grass')  # fmt: skip
SHOT_S = (2.0, 7.0)
"""Shot lengths (s) are drawn uniformly in this range: a cut between shots."""


@dataclass(frozen=True)
class Shot:
    """A camera move over one photograph: crop windows at the start and end (fractions)."""

    photo: int
    start_s: float
    end_s: float
    window0: tuple[float, float, float]
    """Centre x, centre y, width, as fractions of the photograph."""
    window1: tuple[float, float, float]
    sprite: int
    """Photograph a moving patch is cut from (motion inside the shot)."""
    sprite_path: tuple[float, float, float, float]
    """Start and end (x, y) of the patch, as fractions of the frame."""


def load_photos() -> list[np.ndarray]:
    """RGB uint8 photographs from ``skimage.data``."""
    from skimage import data
    from skimage.color import gray2rgb

    photos = []
    for name in PHOTOS:
        image = getattr(data, name)()
        image = gray2rgb(image) if image.ndim == 2 else image[..., :3]
        photos.append(np.ascontiguousarray(image.astype(np.uint8)))
    return photos


def plan_shots(duration_s: float, rng: np.random.Generator, n_photos: int) -> list[Shot]:
    """Cut the movie into shots, each a pan and zoom over a photograph."""
    shots, t = [], 0.0
    while t < duration_s:
        length = float(rng.uniform(*SHOT_S))
        width0, width1 = rng.uniform(0.35, 0.9, 2)
        centre0 = rng.uniform(0.3, 0.7, 2)
        centre1 = np.clip(centre0 + rng.uniform(-0.2, 0.2, 2), 0.25, 0.75)
        path = rng.uniform(0.1, 0.9, 4)
        shots.append(Shot(
            photo=int(rng.integers(n_photos)), start_s=t, end_s=min(t + length, duration_s),
            window0=(*centre0, width0), window1=(*centre1, width1),
            sprite=int(rng.integers(n_photos)), sprite_path=tuple(path),
        ))  # fmt: skip
        t += length
    return shots


def render_frames(
    photos: list[np.ndarray], shots: list[Shot], *, fps: int, size: tuple[int, int]
) -> Iterator[np.ndarray]:
    """Yield the movie's frames, ``(height, width, 3)`` uint8, at ``fps``."""
    width, height = size
    n_frames = int(np.ceil(shots[-1].end_s * fps))
    shot_index = 0
    for index in range(n_frames):
        t = index / fps
        while shot_index + 1 < len(shots) and t >= shots[shot_index].end_s:
            shot_index += 1
        shot = shots[shot_index]
        u = (t - shot.start_s) / max(shot.end_s - shot.start_s, 1e-6)
        cx, cy, w = (a + (b - a) * u for a, b in zip(shot.window0, shot.window1, strict=True))
        yield _frame(photos[shot.photo], photos[shot.sprite], (cx, cy, w), shot.sprite_path, u,
                     width, height)  # fmt: skip


def _frame(photo, sprite_photo, window, path, u, width, height) -> np.ndarray:
    ph, pw = photo.shape[:2]
    cx, cy, w = window
    crop_w = w * pw
    crop_h = min(crop_w * height / width, ph)
    crop_w = crop_h * width / height
    left = np.clip(cx * pw - crop_w / 2, 0, pw - crop_w)
    top = np.clip(cy * ph - crop_h / 2, 0, ph - crop_h)
    image = Image.fromarray(photo).resize(
        (width, height), Image.BILINEAR, box=(left, top, left + crop_w, top + crop_h)
    )
    frame = np.asarray(image).copy()
    # Motion: a patch of another photograph glides across the frame during the shot.
    side = height // 3
    patch = np.asarray(Image.fromarray(sprite_photo).resize((side, side), Image.BILINEAR))
    x = int((path[0] + (path[2] - path[0]) * u) * (width - side))
    y = int((path[1] + (path[3] - path[1]) * u) * (height - side))
    frame[y : y + side, x : x + side] = patch
    return frame


def write_movie_file(frames: Iterator[np.ndarray], path: Path, *, fps: int) -> Path:
    """Encode frames (RGB uint8) to an MPEG-4 file with PyAV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode='w') as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream('mpeg4', rate=fps)
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = 'yuv420p'
                stream.bit_rate = 2_000_000
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')):
                container.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return path
