"""AI Challenger keypoint annotations -> a COCO-keypoints json (what training reads).

The AI Challenger json is a list of images, each with `image_id`, `keypoint_annotations`
(per person: 14 x [x, y, v], v = 1 visible, 2 occluded, 3 not labelled) and
`human_annotations` (per person: [x1, y1, x2, y2]). Its joint order is AI Challenger's own
(`AIC_FILE_ORDER`: shoulders first, head top and neck last), not the channel order of
PoseEstimationForMobile's models (`aic14`): the converted file keeps the file's order and
names every joint, so readers map it by name.
COCO visibility is 2 visible, 1 occluded, 0 not labelled; unlabelled joints and joints
at coordinates <= 0 are written as (0, 0, 0). People with no labelled joint are dropped,
and images left with no usable person are skipped and counted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mdeploy.errors import InputError
from mdeploy.fsutil import atomic_write_text
from mdeploy.keypoints import get_keypoint_set

_VIS = {1: 2, 2: 1, 3: 0}

# AI Challenger's keypoint order, as its annotation files list the joints.
AIC_FILE_ORDER = (
    "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "head_top", "neck",
)


@dataclass
class ConvertReport:
    images: int
    people: int
    skipped_images: int
    skipped_people: int
    missing_files: int

    def to_json(self) -> dict:
        return self.__dict__.copy()


def convert_aic(source: Path, images: Path | None, out: Path) -> ConvertReport:
    try:
        raw = json.loads(Path(source).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"annotations not found: {source}") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{source} is not a JSON file: {err}") from None
    if not isinstance(raw, list):
        raise InputError(f"{source} is not an AI Challenger keypoint file (expected a list of images)")
    kps_set = get_keypoint_set("aic14")
    coco_images, coco_anns = [], []
    skipped_images = skipped_people = missing = 0
    for entry in raw:
        try:
            image_id = entry["image_id"]
            people = entry["keypoint_annotations"]
            boxes = entry.get("human_annotations", {})
        except (KeyError, TypeError):
            raise InputError(f"{source}: an entry lacks image_id or keypoint_annotations") from None
        anns = []
        for person, values in sorted(people.items()):
            if len(values) != 42:
                raise InputError(f"{source}: {image_id} {person} has {len(values) // 3} keypoints, expected 14")
            kps = []
            for i in range(14):
                x, y, v = values[3 * i : 3 * i + 3]
                vis = _VIS.get(int(v), 0)
                if vis == 0 or x <= 0 or y <= 0:
                    kps += [0, 0, 0]
                else:
                    kps += [float(x), float(y), vis]
            labelled = sum(1 for i in range(14) if kps[3 * i + 2] > 0)
            if labelled == 0:
                skipped_people += 1
                continue
            box = boxes.get(person)
            if box and len(box) == 4:
                bbox = [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]
            else:
                xs = [kps[3 * i] for i in range(14) if kps[3 * i + 2] > 0]
                ys = [kps[3 * i + 1] for i in range(14) if kps[3 * i + 2] > 0]
                bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
            anns.append({"keypoints": kps, "num_keypoints": labelled, "bbox": bbox})
        if not anns:
            skipped_images += 1
            continue
        file_name = f"{image_id}.jpg"
        width = height = None
        if images is not None:
            path = Path(images) / file_name
            if not path.is_file():
                missing += 1
                skipped_images += 1
                continue
            from mdeploy.limits import open_image

            with open_image(path) as img:  # reads the header only; refused over the pixel budget
                width, height = img.size
        img_id = len(coco_images) + 1
        coco_images.append({"id": img_id, "file_name": file_name, "width": width, "height": height})
        for ann in anns:
            ann.update({"id": len(coco_anns) + 1, "image_id": img_id, "category_id": 1, "iscrowd": 0})
            ann["area"] = ann["bbox"][2] * ann["bbox"][3]
            coco_anns.append(ann)
    data = {
        "info": {"description": f"converted from AI Challenger ({Path(source).name}) by mdeploy"},
        "images": coco_images,
        "annotations": coco_anns,
        "categories": [
            {"id": 1, "name": "person", "keypoints": list(AIC_FILE_ORDER),
             "skeleton": [[AIC_FILE_ORDER.index(kps_set.names[a]) + 1, AIC_FILE_ORDER.index(kps_set.names[b]) + 1] for a, b in kps_set.skeleton]}
        ],
    }
    atomic_write_text(Path(out), json.dumps(data) + "\n")
    return ConvertReport(len(coco_images), len(coco_anns), skipped_images, skipped_people, missing)
