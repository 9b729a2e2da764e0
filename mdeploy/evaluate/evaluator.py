"""Run any model (through a runner) over a keypoints split and score it.

Images go through `Preprocessing.apply` (the same path as parity and prediction), the
heatmaps through `decode`, and keypoints back to the original image through the inverse
of the preprocessing, where they are compared with the annotations. The annotations are
already in the model's keypoint order (the dataset readers map them by name); joints the
data lacks are unlabelled there and not scored.

Which metrics a split gets depends on what its people carry: PCKh where the data has head
joints (or head boxes), PCK@0.2 (torso) where it has shoulders and hips. The split's
`primary` metric is the first of those it has; gates and tables lead with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from mdeploy.data.coco import HEAD_TOP_NECK, Dataset
from mdeploy.evaluate import pefm
from mdeploy.evaluate.decode import clear_peaks, decode_spec, to_source
from mdeploy.evaluate.metrics import PCK, TORSO, joint_distance, pck
from mdeploy.images import load_rgb
from mdeploy.spec import ModelSpec

METRICS = ("pckh@0.5", "pckh@0.5_labelled", "pefm_pckh", "pck@0.2_torso")
PRIMARY_ORDER = ("pckh@0.5", "pck@0.2_torso")


@dataclass
class EvalResult:
    metrics: dict[str, float | None]
    per_joint: dict[str, dict[str, float | None]]
    samples: int
    scored: int  # samples with the primary metric's normaliser
    primary: str | None = None
    normalisers: dict[str, str] = field(default_factory=dict)
    joints: dict[str, int] = field(default_factory=dict)  # joints a percentage metric counted: its resolution
    # Per person and joint, for the primary metric: "hits" (1 within, 0 not, - not scored) and,
    # when asked for (`evaluate(..., peaks=True)`), "clear" (1 where the model's heatmap has one
    # clear peak, decode.clear_peaks), one string per person. The accuracy stage stores them for
    # the gates, which compare an artifact's hits with its source model's, joint by joint; they
    # are not part of `to_json` (a summary).
    instances: dict | None = None
    # With several crops per person (`evaluate(..., crops=n)`, evaluate/crops.py): the metrics over
    # all of them and each crop's primary metric; `metrics` above stay the original crops'.
    crops: dict | None = None

    def to_json(self) -> dict:
        out = {
            "metrics": self.metrics,
            "primary": self.primary,
            "normalisers": self.normalisers,
            "per_joint": self.per_joint,
            "samples": self.samples,
            "scored": self.scored,
            "joints": self.joints,
        }
        return out | {"crops": self.crops} if self.crops else out


def prepare(spec: ModelSpec, ds: Dataset, indices) -> tuple[np.ndarray, list]:
    inputs, affines = [], []
    for i in indices:
        s = ds.samples[i]
        x, aff = spec.preprocessing.apply(load_rgb(s.image), s.crop_box(ds.crop))
        inputs.append(x)
        affines.append(aff)
    return np.stack(inputs), affines


def predict_split(
    runner: Callable[[np.ndarray], np.ndarray],
    spec: ModelSpec,
    ds: Dataset,
    *,
    batch_size: int = 16,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    peaks: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Keypoints in source-image pixels per sample: (the spec's decode [N, K, 3], PEFM's decode [N, K, 2],
    with `peaks` [N, K] whether each joint's heatmap has one clear peak, else None)."""
    n = min(len(ds), limit) if limit else len(ds)
    k = len(spec.keypoints)
    std = np.zeros((n, k, 3), np.float32)
    lenient = np.zeros((n, k, 2), np.float64)
    clear = np.zeros((n, k), bool) if peaks else None
    stride = spec.output_stride
    for start in range(0, n, batch_size):
        idx = list(range(start, min(n, start + batch_size)))
        batch, affines = prepare(spec, ds, idx)
        hm = np.asarray(runner(batch), np.float32)
        a = decode_spec(hm, stride, spec.decode)
        if peaks:
            clear[idx] = clear_peaks(hm)
        lenient[idx] = pefm.decode(hm, affines, spec.preprocessing.size)
        for j, i in enumerate(idx):
            std[i] = to_source(a[j], affines[j])
        if progress:
            progress(idx[-1] + 1, n)
    return std, lenient, clear


def evaluate(runner: Callable[[np.ndarray], np.ndarray], spec: ModelSpec, ds: Dataset, *, crops: int = 1,
             **options) -> EvalResult:
    """Score a runner on a split; `options` as `predict_split` takes them (batch_size, limit,
    progress, peaks: also say which joints the heatmaps find clearly). With `crops` > 1 every
    person is also scored through crops - 1 jittered crops (evaluate/crops.py), summarised in
    the result's `crops`."""
    if crops <= 1 or options.get("limit"):
        std, lenient, clear = predict_split(runner, spec, ds, **options)
        return score(std, lenient, ds, spec, clear)
    from mdeploy.evaluate import crops as jitter

    every = jitter.jittered(ds, crops)
    std, lenient, clear = predict_split(runner, spec, every, **options)
    n = len(ds)
    result = score(std[:n], lenient[:n], ds, spec, None if clear is None else clear[:n])
    result.crops = jitter.summary(score(std, lenient, every, spec), crops, n)
    return result


def score(std: np.ndarray, lenient: np.ndarray, ds: Dataset, spec: ModelSpec, clear: np.ndarray | None = None) -> EvalResult:
    """The split's metrics for keypoints in source pixels (`predict_split`'s first two), with the
    per-joint hits of the primary metric in `instances`, and `clear` [N, K] beside them if given."""
    n = len(std)
    truth = np.stack([ds.samples[i].keypoints for i in range(n)]).astype(np.float32)
    results, normalisers, scored = {}, {}, {}
    if ds.head_rule is not None:
        head = np.array([np.nan if s.head_size is None else s.head_size for s in ds.samples[:n]], np.float64)
        results["pckh@0.5"] = pck(std, truth, head, 0.5, min_visibility=2)
        results["pckh@0.5_labelled"] = pck(std, truth, head, 0.5, min_visibility=1)
        normalisers["head"] = ds.head_rule
        scored["pckh@0.5"] = int(np.isfinite(head).sum())
    if ds.head_rule == HEAD_TOP_NECK and spec.keypoints.head and ds.mapping is not None and not ds.mapping.missing:
        # PoseEstimationForMobile's rules: every joint of every person counts (see evaluate/pefm.py).
        hits = pefm.correct(lenient, truth, spec.keypoints.head)
        results["pefm_pckh"] = PCK(hits.sum(axis=0), np.full(hits.shape[1], hits.shape[0]))
    torso_joints = [spec.keypoints.index(j) for j in TORSO]
    if None not in torso_joints:
        torso = joint_distance(truth, *torso_joints)
        if np.isfinite(torso).any():
            results["pck@0.2_torso"] = pck(std, truth, torso, 0.2, min_visibility=2)
            normalisers["torso"] = "|left shoulder - right hip| (LSP convention)"
            scored["pck@0.2_torso"] = int(np.isfinite(torso).sum())
    primary = next((m for m in PRIMARY_ORDER if m in results), None)
    per_joint = {}
    for j, name in enumerate(spec.keypoints.names):
        row = {m: _round(r.per_joint()[j]) for m, r in results.items()}
        row["visible"] = int((truth[:, j, 2] >= 2).sum())
        row["labelled"] = int((truth[:, j, 2] >= 1).sum())
        per_joint[name] = row
    metrics = {m: (_round(results[m].value) if m in results else None) for m in METRICS}
    joints = {m: int(r.total.sum()) for m, r in results.items()}
    instances = None
    if primary and results[primary].hits is not None:
        instances = {"metric": primary,
                     "hits": ["".join("-" if v < 0 else str(int(v)) for v in row) for row in results[primary].hits]}
        if clear is not None:
            instances["clear"] = ["".join("1" if c else "0" for c in row) for row in clear]
    return EvalResult(metrics, per_joint, n, scored.get(primary, 0), primary, normalisers, joints, instances)


def _round(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), 3)
