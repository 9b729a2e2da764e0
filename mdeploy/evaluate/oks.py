"""COCO keypoint AP (OKS) of multi-person models, computed by pycocotools.

A multi-person model is scored the way COCO scores it: each decoded person becomes a
detection (17 keypoints and a score), matched to the labelled people of its image by
object keypoint similarity (OKS), and AP is averaged over OKS thresholds 0.50:0.05:0.95.
mdeploy does not re-implement that protocol: pycocotools (the COCO team's own evaluator,
from the package index) computes it, so the numbers compare with published ones.

What mdeploy adds is the part that goes wrong silently, the keypoint order:
- the ground truth's keypoints are read by *name* (its `categories[].keypoints`) and put
  in COCO-17 order, the order pycocotools' per-joint OKS sigmas assume; a file whose
  names are not the 17 COCO joints is refused;
- a person from `mdeploy.evaluate.paf.decode_people` carries its model's parts (COCO-18
  for tf-openpose: the 17 COCO joints plus the neck); `joint_mapping` maps them onto
  COCO-17 by name, so the neck is dropped (COCO does not label it, so it is not scored);
- a part the decoder did not find is written as (0, 0, 0), as COCO submissions do: it
  counts against the person's OKS if that joint is labelled.
The person's score is the decoder's (`Person.score`). Labelled people without a single
keypoint and crowd regions (`iscrowd`) are ignored by pycocotools' own rules: a detection
on them neither counts as right nor as wrong.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mdeploy.errors import InputError
from mdeploy.keypoints import JointMapping, KeypointSet, get_keypoint_set, map_names

COCO17 = "coco17"

# pycocotools reports -1 for a size range without labelled people; mdeploy says None.
_SUMMARY = (
    ("ap", 0),  # AP @ OKS 0.50:0.95, all sizes, 20 people per image
    ("ap50", 1),
    ("ap75", 2),
    ("ap_medium", 3),  # 32^2 < area <= 96^2
    ("ap_large", 4),  # area > 96^2
    ("ar", 5),  # AR @ OKS 0.50:0.95, all sizes
)


@dataclass(frozen=True)
class KeypointAP:
    """COCO keypoint AP/AR of one set of detections against one ground-truth file."""

    ap: float
    ap50: float
    ap75: float
    ap_medium: float | None  # None: no labelled person of that size
    ap_large: float | None
    ar: float
    images: int  # images evaluated
    people: int  # labelled people (not crowd regions)
    people_with_keypoints: int  # of those, the ones with at least one labelled keypoint (the ones scored)
    detections: int
    mapping: str  # how the model's parts were mapped onto COCO-17

    def to_json(self) -> dict:
        return dict(self.__dict__)


def joint_mapping(keypoints: KeypointSet | str) -> JointMapping:
    """The model's parts -> COCO-17 joints, by name (`mapping.source[j]` = the part of joint j).

    For tf-openpose's COCO-18 this maps all 17 COCO joints and drops the neck.
    """
    kps = get_keypoint_set(keypoints) if isinstance(keypoints, str) else keypoints
    mapping = map_names(kps.names, get_keypoint_set(COCO17), source=f"keypoint set {kps.name}")
    if mapping.missing:
        raise InputError(
            f"keypoint set {kps.name} lacks COCO joints {', '.join(mapping.missing)}: COCO keypoint AP needs all 17"
        )
    return mapping


# tf-openpose's COCO-18 parts onto COCO-17, by name: every COCO joint from its part, the neck not scored.
COCO18_TO_COCO17: JointMapping = joint_mapping("coco18")


def load_ground_truth(source: str | Path | Mapping, *, where: str | None = None) -> dict:
    """A COCO keypoint file (path or parsed dict) checked and put in COCO-17 joint order.

    Returns a new dict (the input is not changed) that pycocotools can index: every
    annotation has 17 (x, y, v) keypoints in COCO-17 order, `num_keypoints`, `area` and
    `iscrowd`; only the person category is kept.
    """
    if isinstance(source, Mapping):
        data = copy.deepcopy(dict(source))
        where = where or "ground truth"
    else:
        path = Path(source)
        where = where or str(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"cannot read the COCO keypoint file: {exc}", where=where) from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
        raise InputError("not a COCO file: it needs 'images' and 'annotations' lists", where=where)
    categories = [c for c in data.get("categories") or [] if isinstance(c, dict)]
    people = [c for c in categories if c.get("keypoints")]
    if not people:
        raise InputError(
            "the COCO file has no keypoint category (categories[].keypoints): COCO keypoint AP needs labelled keypoints",
            where=where,
            hint="a detection-only COCO file (boxes) cannot score a pose model",
        )
    if len(people) > 1:
        raise InputError(f"the COCO file has {len(people)} keypoint categories; mdeploy scores one (person)", where=where)
    category = people[0]
    mapping = map_names(category["keypoints"], get_keypoint_set(COCO17), source="COCO keypoint file", where=where)
    if mapping.missing:
        raise InputError(
            f"the file's keypoints lack COCO joints {', '.join(mapping.missing)}: the OKS sigmas are COCO-17's",
            where=where,
            hint=f"the file's keypoints: {', '.join(map(str, category['keypoints']))}",
        )
    image_ids = {img.get("id") for img in data["images"] if isinstance(img, dict)}
    count = len(category["keypoints"])
    annotations = []
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or ann.get("category_id") != category.get("id"):
            continue
        kps = ann.get("keypoints")
        if not isinstance(kps, list) or len(kps) != 3 * count:
            raise InputError(
                f"annotation {ann.get('id', i)} has {len(kps) if isinstance(kps, list) else 'no'} keypoint values; "
                f"the category names {count} keypoints ({3 * count} values)",
                where=where,
            )
        if ann.get("image_id") not in image_ids:
            raise InputError(f"annotation {ann.get('id', i)} names image {ann.get('image_id')!r}, which the file does not list", where=where)
        triples = np.asarray(kps, np.float64).reshape(count, 3)
        ordered = np.zeros((17, 3), np.float64)
        for j, s in enumerate(mapping.source):
            ordered[j] = triples[s]
        out = dict(ann)
        out["keypoints"] = [float(v) if k % 3 < 2 else int(v) for k, v in enumerate(ordered.reshape(-1))]
        out["num_keypoints"] = int((ordered[:, 2] > 0).sum())
        out.setdefault("iscrowd", 0)
        if "area" not in out:  # COCO's area is the segment's; a file without one falls back to the box
            box = out.get("bbox") or [0, 0, 0, 0]
            out["area"] = float(box[2]) * float(box[3])
        out.setdefault("id", i + 1)
        annotations.append(out)
    labelled = [a for a in annotations if not a["iscrowd"]]
    if not labelled:
        raise InputError(
            "the COCO file has no labelled people (person annotations that are not crowd regions): nothing to score",
            where=where,
        )
    if not any(a["num_keypoints"] > 0 for a in labelled):
        raise InputError("the COCO file's people have no labelled keypoints (every v is 0): nothing to score", where=where)
    category = dict(category, keypoints=list(get_keypoint_set(COCO17).names))
    if "skeleton" in category:
        del category["skeleton"]  # its indices follow the file's order, not COCO-17's
    return {"images": list(data["images"]), "annotations": annotations, "categories": [category]}


def detections(
    ground_truth: Mapping,
    people: Mapping[int | str, Iterable],
    mapping: JointMapping,
    *,
    normalized: bool = True,
) -> list[dict]:
    """Decoded people -> COCO result entries (image_id, category_id, 17 keypoints, score).

    `people` maps an image (its id, or its file name) to its people (`Person` objects with
    `keypoints` [K, 3], `present` [K] and `score`). With `normalized`, x and y are fractions of
    the image (decode_people's default, right for a stretched model input) and are multiplied
    by the image's size; otherwise they are already the image's pixels.
    """
    images = {img["id"]: img for img in ground_truth["images"]}
    by_name = {img.get("file_name"): img["id"] for img in ground_truth["images"]}
    category = ground_truth["categories"][0]["id"]
    parts = len(mapping.file_names)
    out = []
    for key, found in people.items():
        image_id = key if key in images else by_name.get(key)
        if image_id is None:
            raise InputError(f"detections for image {key!r}, which the ground truth does not list")
        image = images[image_id]
        if normalized and not (image.get("width") and image.get("height")):
            raise InputError(f"image {key!r} has no width/height in the ground truth: pass pixel coordinates (normalized=False)")
        sx, sy = (float(image["width"]), float(image["height"])) if normalized else (1.0, 1.0)
        for person in found:
            kp = np.asarray(person.keypoints, np.float64)
            present = np.asarray(person.present, bool)
            if kp.shape != (parts, 3) or present.shape != (parts,):
                raise InputError(
                    f"a person of image {key!r} has keypoints {kp.shape}; its keypoint set has {parts} parts"
                )
            values: list[float] = []
            for s in mapping.source:
                if present[s]:
                    values += [float(kp[s, 0] * sx), float(kp[s, 1] * sy), 1.0]
                else:
                    values += [0.0, 0.0, 0.0]
            out.append({"image_id": image_id, "category_id": category, "keypoints": values, "score": float(person.score)})
    return out


def keypoint_ap(
    ground_truth: str | Path | Mapping,
    people: Mapping[int | str, Iterable],
    *,
    keypoints: KeypointSet | str = "coco18",
    normalized: bool = True,
) -> KeypointAP:
    """COCO keypoint AP of decoded people (per image id or file name) against a COCO file.

    Images of the file without an entry in `people` count as images where nobody was
    found. An empty `people` scores 0 (every labelled person missed).
    """
    gt = load_ground_truth(ground_truth)
    mapping = joint_mapping(keypoints)
    dets = detections(gt, people, mapping, normalized=normalized)
    labelled = [a for a in gt["annotations"] if not a["iscrowd"]]
    with_kp = sum(1 for a in labelled if a["num_keypoints"] > 0)
    common = dict(images=len(gt["images"]), people=len(labelled), people_with_keypoints=with_kp,
                  detections=len(dets), mapping=mapping.describe())
    if not dets:  # pycocotools cannot load an empty result list; nobody found = nothing right
        return KeypointAP(ap=0.0, ap50=0.0, ap75=0.0, ap_medium=_empty_range(gt, 32**2, 96**2),
                          ap_large=_empty_range(gt, 96**2, 1e10), ar=0.0, **common)
    stats = _cocoeval(gt, dets)
    values = {name: float(stats[i]) for name, i in _SUMMARY}
    for name in ("ap_medium", "ap_large"):
        if values[name] < 0:
            values[name] = None
    return KeypointAP(**values, **common)


def _empty_range(gt: Mapping, low: float, high: float) -> float | None:
    """0.0 when the file has scored people in the area range, else None (as pycocotools' -1)."""
    inside = [a for a in gt["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0 and low < a["area"] <= high]
    return 0.0 if inside else None


def _cocoeval(gt: dict, dets: list[dict]) -> np.ndarray:
    """pycocotools' keypoint evaluation; its progress printing is swallowed."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(dets))
        evaluator = COCOeval(coco_gt, coco_dt, "keypoints")
        evaluator.params.imgIds = sorted(img["id"] for img in gt["images"])
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.asarray(evaluator.stats)
