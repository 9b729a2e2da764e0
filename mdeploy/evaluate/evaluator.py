"""Run any model (through a runner) over a COCO-keypoints split and score it.

Images go through `Preprocessing.apply` (the same path as parity and prediction), the
heatmaps through `decode`, and keypoints back to the original image through the inverse
of the preprocessing, where they are compared with the annotations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mdeploy.data.coco import Dataset
from mdeploy.evaluate.decode import decode, to_source
from mdeploy.evaluate.metrics import PEFM_SMOOTH_SIGMA, head_sizes, pckh
from mdeploy.spec import ModelSpec
from mdeploy.verify.samples import load_rgb

METRICS = ("pckh@0.5", "pckh@0.5_labelled", "pefm_pckh")


@dataclass
class EvalResult:
    metrics: dict[str, float]
    per_joint: dict[str, dict[str, float]]
    samples: int
    scored: int  # samples with a head size

    def to_json(self) -> dict:
        return {"metrics": self.metrics, "per_joint": self.per_joint, "samples": self.samples, "scored": self.scored}


def prepare(spec: ModelSpec, ds: Dataset, indices) -> tuple[np.ndarray, list]:
    inputs, affines = [], []
    for i in indices:
        s = ds.samples[i]
        x, aff = spec.preprocessing.apply(load_rgb(s.image), s.crop_box(ds.crop))
        inputs.append(x)
        affines.append(aff)
    return np.stack(inputs), affines


def evaluate(
    runner: Callable[[np.ndarray], np.ndarray],
    spec: ModelSpec,
    ds: Dataset,
    *,
    batch_size: int = 16,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    n = min(len(ds), limit) if limit else len(ds)
    k = len(spec.keypoints)
    std = np.zeros((n, k, 3), np.float32)
    lenient = np.zeros((n, k, 3), np.float32)
    truth = np.stack([ds.samples[i].keypoints for i in range(n)]).astype(np.float32)
    stride = spec.output_stride
    for start in range(0, n, batch_size):
        idx = list(range(start, min(n, start + batch_size)))
        batch, affines = prepare(spec, ds, idx)
        hm = np.asarray(runner(batch), np.float32)
        a = decode(hm, stride, spec.decode.smooth_sigma, spec.decode.subpixel)
        b = decode(hm, stride, PEFM_SMOOTH_SIGMA, subpixel=False)
        for j, i in enumerate(idx):
            std[i] = to_source(a[j], affines[j])
            lenient[i] = to_source(b[j], affines[j])
        if progress:
            progress(idx[-1] + 1, n)
    return score(std, lenient, truth, spec)


def score(std: np.ndarray, lenient: np.ndarray, truth: np.ndarray, spec: ModelSpec) -> EvalResult:
    head = spec.keypoints.head
    if head is None:
        raise ValueError(f"keypoint set {spec.keypoints.name} has no head joints: PCKh is not defined for it")
    results = {
        "pckh@0.5": pckh(std, truth, head, 0.5, min_visibility=2),
        "pckh@0.5_labelled": pckh(std, truth, head, 0.5, min_visibility=1),
        "pefm_pckh": pckh(lenient, truth, head, 1.0, min_visibility=1),
    }
    per_joint = {}
    for j, name in enumerate(spec.keypoints.names):
        row = {m: _round(r.per_joint()[j]) for m, r in results.items()}
        row["visible"] = int(results["pckh@0.5"].total[j])
        row["labelled"] = int(results["pckh@0.5_labelled"].total[j])
        per_joint[name] = row
    scored = int(np.isfinite(head_sizes(truth, head)).sum())
    return EvalResult({m: _round(r.value) for m, r in results.items()}, per_joint, len(truth), scored)


def _round(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), 3)
