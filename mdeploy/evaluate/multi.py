"""Score a multi-person model on a COCO-format split: COCO keypoint AP (OKS).

Each image is fed whole (through `Preprocessing.apply`, the path parity and `predict` use),
its people decoded by the model's family, mapped back to the image through the inverse of
the preprocessing and scored by pycocotools against the split's annotation file
(evaluate/oks.py: joints matched by name onto COCO-17; the neck of COCO-18 is not scored).
AP and AR are reported in percent, like every other accuracy number of a build.
"""

from __future__ import annotations

from pathlib import Path

from mdeploy.evaluate.evaluator import EvalResult
from mdeploy.images import load_rgb

PRIMARY = "ap_oks"
NORMALISER = "OKS with COCO-17 sigmas (AP over OKS 0.50:0.95); the neck is not scored"


def evaluate_people(family, runner, spec, ds, *, limit: int | None = None, progress=None, **_options) -> EvalResult:
    """The AP of `runner`'s people on the images of `ds` (a COCO split read by data/coco.py)."""
    from mdeploy.evaluate.decode import to_source
    from mdeploy.evaluate.oks import keypoint_ap
    from mdeploy.families import run_outputs

    images = list(dict.fromkeys(s.image for s in ds.samples))
    if limit:
        images = images[:limit]
    found = {}
    for n, path in enumerate(images):
        x, affine = spec.preprocessing.apply(load_rgb(path))
        outputs = run_outputs(runner, x[None])
        people = family.people(outputs, spec, 0)
        for person in people:
            person.keypoints = to_source(person.keypoints, affine)
        found[Path(path).name] = people
        if progress:
            progress(n + 1, len(images))
    ap = keypoint_ap(ds.source, found, keypoints=spec.keypoints, normalized=False)
    pct = lambda v: None if v is None else round(100.0 * v, 2)  # noqa: E731
    metrics = {PRIMARY: pct(ap.ap), "ap50_oks": pct(ap.ap50), "ap75_oks": pct(ap.ap75), "ar_oks": pct(ap.ar)}
    return EvalResult(
        metrics=metrics,
        per_joint={},
        samples=len(images),
        scored=ap.people_with_keypoints,
        primary=PRIMARY,
        normalisers={k: NORMALISER for k in metrics},
    )
