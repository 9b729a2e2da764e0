"""One parity validator for every format: an artifact's outputs against the canonical model's.

`measure` compares outputs on the same samples and records what it saw: the shape, then
the values (max and mean absolute error, cosine similarity, non-finite values) and, for
heatmaps, the fraction of keypoints whose argmax cell agrees, with a list of the ones
that disagree. Agreement counts the keypoints an app would draw: those whose peak
reaches the decode threshold in the reference or in the artifact. The argmax of a flat,
low heatmap (noise input, an absent joint) is itself noise and says nothing about the
artifact; its values are still held to `max_abs`. `evaluate` applies a tolerance to those measurements and collects every
failed check before deciding, so a report shows all that is wrong at once. Measuring
is the slow part and is cached; tolerances can change without re-running a model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mdeploy.evaluate.decode import clear_peaks
from mdeploy.spec import ModelSpec
from mdeploy.verify.people import MIN_RATIO, artifact_found

MAX_LISTED = 12


def _argmax_cells(heatmaps: np.ndarray) -> np.ndarray:
    """[N, h, w, K] -> [N, K, 2] (row, col) of each channel's maximum."""
    n, h, w, k = heatmaps.shape
    flat = heatmaps.transpose(0, 3, 1, 2).reshape(n, k, h * w)
    idx = np.argmax(flat, axis=2)
    return np.stack([idx // w, idx % w], axis=2)


def measure(reference: np.ndarray, candidate: np.ndarray, sample_names: list[str], spec: ModelSpec) -> dict:
    result: dict = {
        "output": spec.output.name,
        "samples": len(sample_names),
        "reference_shape": list(reference.shape),
        "artifact_shape": list(candidate.shape),
    }
    if reference.shape != candidate.shape:
        result["shape_ok"] = False
        return result
    result["shape_ok"] = True
    finite = np.isfinite(candidate)
    result["non_finite"] = int(finite.size - finite.sum())
    ref = reference.astype(np.float64)
    cand = np.where(finite, candidate, np.nan).astype(np.float64)
    diff = np.abs(ref - cand)
    per_sample = []
    ref_cells, cand_cells = _argmax_cells(reference), _argmax_cells(np.nan_to_num(candidate, nan=-np.inf))
    agree = np.all(ref_cells == cand_cells, axis=2)  # [N, K]
    threshold = spec.decode.threshold
    ref_peaks = reference.max(axis=(1, 2))  # [N, K]
    cand_peaks = np.nan_to_num(candidate, nan=-np.inf).max(axis=(1, 2))
    drawn = (ref_peaks >= threshold) | (cand_peaks >= threshold)
    clear = clear_peaks(reference)  # [N, K] the reference found the joint with one clear peak
    names = spec.keypoints.names
    disagreements = []
    for i, name in enumerate(sample_names):
        d = diff[i]
        per_sample.append(
            {
                "name": name,
                "max_abs": _num(np.nanmax(d) if np.isfinite(d).any() else np.inf, nan_as_inf=True),
                "mean_abs": _num(np.nanmean(d) if np.isfinite(d).any() else np.inf, nan_as_inf=True),
                "agreement": float(agree[i][drawn[i]].mean()) if drawn[i].any() else None,
                "drawn": int(drawn[i].sum()),
                "reference_peak": float(ref_peaks[i].max()),
            }
        )
        for k in np.flatnonzero(drawn[i] & ~agree[i]):
            disagreements.append(
                {
                    "sample": name,
                    "keypoint": names[k] if k < len(names) else str(k),
                    "reference_cell": [int(v) for v in ref_cells[i, k]],
                    "artifact_cell": [int(v) for v in cand_cells[i, k]],
                    "reference_peak": float(ref_peaks[i, k]),
                    "artifact_peak": float(cand_peaks[i, k]),
                    "reference_clear": bool(clear[i, k]),
                }
            )
    result.update(artifact_found(reference, candidate, sample_names, threshold))
    result.update(
        {
            "max_abs": _num(np.max(np.where(np.isnan(diff), np.inf, diff))),
            "mean_abs": _num(np.nanmean(diff)) if np.isfinite(diff).any() else float("inf"),
            "cosine": _cosine(ref, cand),
            "agreement": float(agree[drawn].mean()) if drawn.any() else None,
            "agreement_all": float(agree.mean()),
            "threshold": threshold,
            "drawn": int(drawn.sum()),
            "per_sample": per_sample,
            "disagreements": disagreements[:MAX_LISTED],
            "disagreement_count": len(disagreements),
        }
    )
    return result


def _num(value, nan_as_inf: bool = False) -> float:
    value = float(value)
    if np.isnan(value) and nan_as_inf:
        return float("inf")
    return value


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel(), b.ravel()
    if not np.all(np.isfinite(b)):
        return float("nan")
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denom) if denom else float(np.all(a == b))


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    value: object
    limit: object
    detail: str = ""

    def to_json(self) -> dict:
        return {"check": self.name, "ok": self.ok, "value": self.value, "limit": self.limit, "detail": self.detail}


def evaluate(metrics: dict, max_abs: float, min_agreement: float) -> list[Check]:
    """Every check of the measurements against the tolerance (all of them, not the first failure)."""
    checks = [
        Check(
            "shape",
            metrics["shape_ok"],
            metrics["artifact_shape"],
            metrics["reference_shape"],
            "" if metrics["shape_ok"] else "output shape differs from the canonical model",
        )
    ]
    if not metrics["shape_ok"]:
        return checks
    nonfinite = metrics["non_finite"]
    checks.append(Check("finite", nonfinite == 0, nonfinite, 0, f"{nonfinite} NaN/inf values" if nonfinite else ""))
    worst = max(metrics["per_sample"], key=lambda s: s["max_abs"], default=None)
    checks.append(
        Check(
            "max_abs",
            metrics["max_abs"] <= max_abs,
            metrics["max_abs"],
            max_abs,
            f"worst on {worst['name']}" if worst else "",
        )
    )
    agreement = metrics["agreement"]
    if agreement is None:
        checks.append(
            Check(
                "agreement",
                False,
                None,
                min_agreement,
                f"no keypoint reached the decode threshold {metrics['threshold']:g} on any sample: "
                "nothing to compare (a model that finds no one cannot pass parity)",
            )
        )
    else:
        checks.append(
            Check(
                "agreement",
                agreement >= min_agreement,
                agreement,
                min_agreement,
                f"{metrics['disagreement_count']} of {metrics['drawn']} drawn keypoints moved" if metrics["disagreement_count"] else "",
            )
        )
    if "artifact_found" in metrics:  # measurements cached before this check existed have no counts
        ref, cand = metrics["reference_found"], metrics["artifact_found"]
        ok = cand >= MIN_RATIO * ref and (cand > 0 or ref == 0)  # the canonical model's own check covers ref == 0
        checks.append(
            Check(
                "finds people",
                ok,
                cand,
                f">= {MIN_RATIO:g} x {ref}",
                f"{cand} confident keypoints on {metrics['photos']} photo(s), the canonical model {ref}"
                + ("" if ok else "; the artifact finds far fewer people than the model it was made from"),
            )
        )
    return checks
