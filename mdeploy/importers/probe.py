"""Guess an imported model's preprocessing by trying it on photos of people.

A wrong channel order or value range does not fail anything: it silently collapses the
heatmaps. So `mdeploy init` runs the model on photos of people under each channel order
(RGB, BGR) and value range ([0, 1], [-1, 1], [0, 255]), preprocessed by the same
`Preprocessing.apply` every later stage uses, and keeps the setting under which the model
finds people most confidently: the most keypoints whose heatmap peak exceeds the decode
threshold, summed over the photos (ties: the higher mean peak). The photos are the
package photos (they ship with every install); more can be added.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mdeploy.errors import InputError

CHANNELS = ("rgb", "bgr")
RANGES = ((0.0, 1.0), (-1.0, 1.0), (0.0, 255.0))
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
CLOSE = 0.85  # a runner-up this near (in keypoints found) makes the call a close one


@dataclass(frozen=True)
class Score:
    channels: str
    range: tuple[float, float]
    found: int  # keypoints with a peak over the threshold, summed over photos
    mean_peak: float

    def label(self) -> str:
        return f"{self.channels} [{self.range[0]:g}, {self.range[1]:g}]"

    def to_json(self) -> dict:
        return {"channels": self.channels, "range": list(self.range), "found": self.found, "mean_peak": round(self.mean_peak, 4)}


def probe_photos(extra: Sequence[Path] = ()) -> list[tuple[str, np.ndarray]]:
    """The package photos of people, plus images from `extra` (files, or folders of images)."""
    from mdeploy.images import PACKAGE_PHOTOS, load_rgb, package_photo

    photos = [(name, package_photo(name)) for name in PACKAGE_PHOTOS]
    for item in extra:
        item = Path(item)
        if item.is_dir():
            files = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise InputError(f"--probe-images {item}: no .jpg/.png images in that folder")
        elif item.is_file():
            files = [item]
        else:
            raise InputError(f"--probe-images {item}: no such file or folder")
        photos += [(p.name, load_rgb(p)) for p in files]
    return photos


def settings(channels: str | None = None, value_range: tuple[float, float] | None = None) -> list[tuple[str, tuple[float, float]]]:
    """The settings to try; a value the user gave is not probed."""
    chans = (channels,) if channels else CHANNELS
    ranges = (value_range,) if value_range else RANGES
    return [(c, r) for c in chans for r in ranges]


def probe(run: Callable[[np.ndarray], np.ndarray], size: tuple[int, int], photos: list[tuple[str, np.ndarray]],
          tried: list[tuple[str, tuple[float, float]]], threshold: float) -> list[Score]:
    """Every setting in `tried`, scored; best first."""
    from mdeploy.spec import Preprocessing

    scores = []
    for channels, value_range in tried:
        pre = Preprocessing(size=tuple(size), channels=channels, range=tuple(value_range))
        found, peaks = 0, []
        for _, rgb in photos:
            x, _ = pre.apply(rgb)
            y = np.nan_to_num(np.asarray(run(x[None]), np.float32), nan=0.0, posinf=0.0, neginf=0.0)
            peak = y.reshape(-1, y.shape[-1]).max(axis=0)  # one peak per keypoint channel
            found += int((peak > threshold).sum())
            peaks.append(peak.mean())
        scores.append(Score(channels, tuple(value_range), found, float(np.mean(peaks))))
    order = sorted(range(len(scores)), key=lambda i: (-scores[i].found, -scores[i].mean_peak, i))
    return [scores[i] for i in order]


def close_call(scores: list[Score]) -> Score | None:
    """The runner-up that did nearly as well as the best, if any (the guess is then uncertain)."""
    if len(scores) < 2 or scores[0].found == 0:
        return None
    runner_up = scores[1]
    return runner_up if runner_up.found >= CLOSE * scores[0].found else None


def recipe_note(scores: list[Score], photo_count: int, threshold: float) -> list[str]:
    """YAML comment lines for the recipe: what was probed and how the others scored."""
    best = scores[0]
    lines = [
        f"channels and range were probed by `mdeploy init` on {photo_count} photos of people: {best.label()} found "
        f"{best.found} keypoints over {threshold:g} (mean peak {best.mean_peak:.3f})",
    ]
    if len(scores) > 1:
        lines.append("runner-up settings: " + ", ".join(f"{s.label()} {s.found} ({s.mean_peak:.3f})" for s in scores[1:]))
    near = close_call(scores)
    if near is not None:
        lines.append(f"a close call with {near.label()}: check it against the model's training code")
    if best.found == 0:
        lines.append("no setting found people: the probe could not tell; check them against the model's training code")
    return lines
