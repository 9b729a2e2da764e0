"""Several crops of each person: accuracy on a small split that measures the model, not luck.

On a split of a few people PCKh moves by whole joints, and the joints a model finds weakly (a
low heatmap peak, two near-equal ones) flip under any small change: a crop a few pixels off,
or int8 rounding. With one crop per person a gate on such a split is decided by those flips.
So the accuracy stage can score every person through several crops: the original one, then
copies shifted by up to `SHIFT` of the crop's side on each axis and scaled by up to `SCALE`
(the jitter a person detector's box has), drawn from a fixed seed, so that every model of a
build sees the same crops and their drops pair up crop by crop. The gate compares the means
over all crops; the spread of the paired drops over the crops gives the drop's standard error.

`verify.accuracy.crops: auto` takes enough crops for `AUTO_PERSON_CROPS` person-crops per
split (at most `MAX_CROPS` per person): 23 for 9 people, one for a split of 200 or more.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from mdeploy.evaluate.metrics import drop

SHIFT = 0.04  # largest shift of a crop's centre, as a share of its side, on each axis
SCALE = 0.05  # largest change of its side, as log(scale): 0.95x to 1.05x
SEED = 0
AUTO_PERSON_CROPS = 200
MAX_CROPS = 32


def copies_for(setting: int | str, people: int) -> int:
    """How many crops of each person a split is scored through (`verify.accuracy.crops`)."""
    if setting == "auto":
        return max(1, min(MAX_CROPS, math.ceil(AUTO_PERSON_CROPS / max(people, 1))))
    return int(setting)


def jittered(ds, copies: int, seed: int = SEED):
    """The dataset with each person `copies` times, copy by copy: sample c * len(ds) + i is copy c
    of person i, copy 0 the original crop. Only the crop changes; keypoints and head sizes stay."""
    rng = np.random.default_rng(seed)
    samples = list(ds.samples)
    for _ in range(1, copies):
        for s in ds.samples:
            x, y, w, h = s.crop_box(ds.crop)
            scale = float(np.exp(rng.uniform(-SCALE, SCALE)))
            dx, dy = rng.uniform(-SHIFT, SHIFT, 2)
            cx, cy = x + w / 2 + dx * w, y + h / 2 + dy * h
            w, h = w * scale, h * scale
            samples.append(replace(s, box=(float(cx - w / 2), float(cy - h / 2), float(w), float(h))))
    return replace(ds, samples=samples)


def per_copy(hits: list[str], copies: int) -> list[float | None]:
    """The primary metric of each copy (percent) from the per-person hit strings of all copies
    ('1' within, '0' not, '-' not scored; `EvalResult.instances`)."""
    n = len(hits) // copies
    out = []
    for c in range(copies):
        rows = "".join(hits[c * n:(c + 1) * n])
        scored = rows.count("1") + rows.count("0")
        out.append(round(100.0 * rows.count("1") / scored, 3) if scored else None)
    return out


def summary(pooled, copies: int, people: int) -> dict:
    """What an EvalResult over all crops (`pooled`) keeps: the means and each copy's primary metric."""
    hits = (pooled.instances or {}).get("hits")
    return {"copies": copies, "people": people, "shift": SHIFT, "scale": SCALE, "seed": SEED,
            "metrics": pooled.metrics, "primary": pooled.primary,
            "per_copy": per_copy(hits, copies) if hits else None}


def gate_drop(metric: str | None, reference: dict, result: dict) -> dict:
    """An artifact's drop on a split against its source model (accuracy results as the accuracy
    stage stores them): over the crops both were scored through where they were ({drop, crops,
    se, original}: `original` the drop on the original crops alone), else {drop} on the original
    crops."""
    original = drop(metric, (reference.get("metrics") or {}).get(metric), (result.get("metrics") or {}).get(metric))
    paired = paired_drop(metric, reference, result) if metric else None
    return paired | {"original": original} if paired else {"drop": original}


def paired_drop(metric: str, reference: dict, result: dict) -> dict | None:
    """The drop of `result` against `reference` (accuracy results as the accuracy stage stores them)
    over their crops: {drop, crops, se} (se: standard error of the mean of the paired per-crop drops,
    None where the metric is not the split's primary one or there is one crop). None when the two
    were not scored through the same crops."""
    ref, new = reference.get("crops"), result.get("crops")
    if not ref or not new or ref["copies"] != new["copies"] or ref.get("seed") != new.get("seed"):
        return None
    value = drop(metric, ref["metrics"].get(metric), new["metrics"].get(metric))
    if value is None:
        return None
    se = None
    a, b = ref.get("per_copy"), new.get("per_copy")
    if metric == ref.get("primary") and a and b and len(a) == len(b) > 1 and None not in a and None not in b:
        diffs = np.array([drop(metric, x, y) for x, y in zip(a, b)], np.float64)
        se = round(float(diffs.std(ddof=1) / math.sqrt(len(diffs))), 3)
    return {"drop": value, "crops": ref["copies"], "se": se}
