"""Does the model find people? A check on the photos of people verification feeds it.

A model that sees nobody (a wrong channel order or value range, the wrong output tensor)
produces flat heatmaps: every argmax is noise, parity between two such outputs agrees
trivially, and accuracy gates only compare it with itself. So the canonical model must
reach the app's draw threshold on the photos (the real photos shipped with installed
packages and the recipe's own images), and every artifact must find about as many
confident keypoints there as the canonical model does.
"""

from __future__ import annotations

import numpy as np

MIN_FOUND = 3  # confident keypoints on one photo that make "a person found"
MIN_RATIO = 0.5  # an artifact must find at least this share of the reference's keypoints

HINT = (
    "a model that finds no one is usually fed the wrong input: check model.input.channels (rgb/bgr) and "
    "model.input.range ([0, 1], [-1, 1] or [0, 255]) against what it was trained on "
    "(`mdeploy init --import FILE` probes them), and that model.import.outputs names the final heatmaps"
)


def is_photo(name: str) -> bool:
    return name.startswith(("photo:", "image:"))


def found_counts(heatmaps: np.ndarray, threshold: float) -> tuple[list[int], list[float]]:
    """Per sample: keypoints whose heatmap peak reaches `threshold`, and the highest peak."""
    hm = np.nan_to_num(np.asarray(heatmaps, np.float32), nan=-np.inf)
    peaks = hm.max(axis=(1, 2))  # [N, K]
    return [int(v) for v in (peaks >= threshold).sum(axis=1)], [float(v) for v in peaks.max(axis=1)]


def measure_people(heatmaps: np.ndarray, names: list[str], threshold: float) -> dict:
    """What the canonical model finds on the photos among `names` (all samples when none is a photo)."""
    counts, peaks = found_counts(heatmaps, threshold)
    photos = [i for i, n in enumerate(names) if is_photo(n)] or list(range(len(names)))
    per_photo = [{"name": names[i], "found": counts[i], "peak": round(peaks[i], 4)} for i in photos]
    return {
        "threshold": threshold,
        "photos": per_photo,
        "people": sum(1 for p in per_photo if p["found"] >= MIN_FOUND),
        "found": sum(p["found"] for p in per_photo),
        "keypoints": int(np.asarray(heatmaps).shape[-1]),
    }


def people_check(metrics: dict) -> dict:
    """The canonical model's check: a person found on at least one photo."""
    ok = metrics["people"] >= 1
    shown = ", ".join(f"{p['name']} {p['found']}/{metrics['keypoints']} (peak {p['peak']:.2f})" for p in metrics["photos"])
    detail = f"confident keypoints (>= {metrics['threshold']:g}) per photo: {shown}"
    if not ok:
        detail = f"no photo has {MIN_FOUND} confident keypoints: the model finds no one; {detail}"
    return {"check": "finds people on the photos", "ok": ok, "value": metrics["people"], "limit": 1, "detail": detail}


def artifact_found(reference: np.ndarray, candidate: np.ndarray, names: list[str], threshold: float) -> dict:
    """Confident keypoints of an artifact against the reference's, summed over the photos."""
    ref, _ = found_counts(reference, threshold)
    cand, _ = found_counts(candidate, threshold)
    photos = [i for i, n in enumerate(names) if is_photo(n)] or list(range(len(names)))
    return {"reference_found": sum(ref[i] for i in photos), "artifact_found": sum(cand[i] for i in photos), "photos": len(photos)}
