"""Multi-person heatmaps + part affinity fields (tf-openpose's OpenPose-MobileNet).

Two canonical outputs, kept apart so that each gets its own int8 scale (0..1 heatmaps and
-1..1 PAFs share none): `heatmaps` [1, H/8, W/8, parts + background] and `pafs`
[1, H/8, W/8, 2 x limbs]. Which channel means what is the spec's `head.layout` (a
`PafLayout`: parts, limbs, the x/y channel pair of each limb, the background channel); the
decode constants are `head.settings` (`PafSettings`). A release that concatenates both into
one tensor (tf-openpose's `Openpose/concat_stage7`) is split at import.

People come out by tf-openpose's rules (evaluate/paf.py). Parity compares people, not only
tensors: every part of every person the canonical model finds must be found, within one
output cell, on the matching person of the artifact. Accuracy is COCO keypoint AP (OKS).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mdeploy.errors import ModelError
from mdeploy.evaluate.paf import PafSettings, Person, decode_people
from mdeploy.families import Family, Outputs
from mdeploy.families.heatmap import stride_of
from mdeploy.keypoints import TF_OPENPOSE_COCO18, PafLayout
from mdeploy.registry import Registry
from mdeploy.spec import OUTPUT_NAME

PAF_OUTPUT = "pafs"
MAX_LISTED = 12

LAYOUTS: Registry[PafLayout] = Registry("PAF layout")
LAYOUTS.register(TF_OPENPOSE_COCO18.name, TF_OPENPOSE_COCO18)


def layout_of(head: dict) -> PafLayout:
    """The PafLayout a spec's head names (registered layouts only: channels are data, not guesses)."""
    data = head["layout"]
    layout = LAYOUTS.get(data["name"])
    if layout.to_json() != data:  # a spec written with another table than this version's
        layout = PafLayout(data["name"], data["keypoints"], tuple(tuple(limb) for limb in data["limbs"]),
                           tuple(tuple(p) for p in data["paf_channels"]), data["background"], data["new_person_limbs"],
                           data["stride"])
    return layout


def settings_of(head: dict) -> PafSettings:
    return PafSettings(**head.get("settings", {}))


class PafFamily(Family):
    name = "paf"
    description = "multi-person: part heatmaps and part affinity fields"
    multi_person = True

    def output_names(self, head: dict) -> tuple[str, ...]:
        return (OUTPUT_NAME, PAF_OUTPUT)

    def head(self, recipe) -> dict:
        section = recipe.model.paf
        layout = LAYOUTS.get(section.layout)
        settings = PafSettings(**section.settings())
        return {"layout": layout.to_json(), "settings": settings.to_json()}

    def canonical(self, raw, head: dict, where: str | None = None) -> dict:
        layout = layout_of(head)
        if isinstance(raw, dict):
            if OUTPUT_NAME in raw and PAF_OUTPUT in raw:
                return {OUTPUT_NAME: raw[OUTPUT_NAME], PAF_OUTPUT: raw[PAF_OUTPUT]}
            raw = list(raw.values())
        if isinstance(raw, (list, tuple)):
            if len(raw) < 2:
                raw = raw[-1]
            else:  # a trained model's last two outputs: heatmaps and PAFs, told apart by channels
                last = list(raw[-2:])
                by_channels = {int(t.shape[-1]): t for t in last}
                if set(by_channels) != {layout.heatmaps, layout.pafs}:
                    raise ModelError(
                        f"the model's last outputs have {sorted(by_channels)} channels; PAF layout {layout.name} expects "
                        f"{layout.heatmaps} heatmap and {layout.pafs} PAF channels",
                        where=where,
                    )
                return {OUTPUT_NAME: by_channels[layout.heatmaps], PAF_OUTPUT: by_channels[layout.pafs]}
        channels = raw.shape[-1]
        if channels != layout.channels:
            raise ModelError(
                f"the model output has {channels} channels; PAF layout {layout.name} expects {layout.channels}: "
                f"{layout.heatmaps} heatmaps ({layout.parts} parts of {layout.keypoints}"
                f"{' + background' if layout.background is not None else ''}) then {layout.pafs} PAF channels "
                f"(x, y for each of {len(layout.limbs)} limbs)",
                where=where,
            )
        return {OUTPUT_NAME: raw[..., : layout.heatmaps], PAF_OUTPUT: raw[..., layout.heatmaps:]}

    def planned_channels(self, recipe, keypoints: int) -> dict[str, int]:
        layout = layout_of(self.head(recipe))
        return {OUTPUT_NAME: layout.heatmaps, PAF_OUTPUT: layout.pafs}

    def check_outputs(self, recipe, size: tuple[int, int], shapes: dict[str, tuple[int, ...]], where: Callable) -> int:
        head = self.head(recipe)
        layout = layout_of(head)
        if recipe.model.keypoints != layout.keypoints:
            raise ModelError(
                f"PAF layout {layout.name} is for keypoint set {layout.keypoints}, but model.keypoints is {recipe.model.keypoints}",
                where=where("model", "keypoints"),
            )
        heat, paf = shapes[OUTPUT_NAME], shapes[PAF_OUTPUT]
        if len(heat) != 4 or heat[0] != 1 or tuple(heat[1:3]) != tuple(paf[1:3]):
            raise ModelError(
                f"heatmaps {list(heat)} and PAFs {list(paf)} must be NHWC [1, height, width, channels] on one grid",
                where=where("model", "import", "outputs"),
            )
        stride = stride_of(size, (heat[1], heat[2]), where)
        if stride != layout.stride:
            raise ModelError(
                f"the output grid is the input / {stride}; PAF layout {layout.name} is for stride {layout.stride}",
                where=where("model", "import", "outputs"),
            )
        return stride

    # ---- people
    def people(self, outputs: Outputs, spec, index: int) -> list[Person]:
        head = spec.head
        return decode_people(outputs[OUTPUT_NAME][index], outputs[PAF_OUTPUT][index], settings_of(head), layout_of(head),
                             input_size=(spec.input.shape[1], spec.input.shape[2]))

    # ---- verification
    def parity(self, reference: Outputs, candidate: Outputs, names: list[str], spec) -> dict:
        from mdeploy.verify.parity import _cosine, _num
        from mdeploy.verify.people import is_photo

        result: dict = {
            "output": ", ".join(o.name for o in spec.outputs),
            "samples": len(names),
            "reference_shape": [list(reference[o.name].shape) for o in spec.outputs],
            "artifact_shape": [list(np.shape(candidate.get(o.name))) for o in spec.outputs],
        }
        result["shape_ok"] = result["reference_shape"] == result["artifact_shape"]
        if not result["shape_ok"]:
            return result
        ref = np.concatenate([reference[o.name].reshape(len(names), -1) for o in spec.outputs], axis=1).astype(np.float64)
        cand = np.concatenate([candidate[o.name].reshape(len(names), -1) for o in spec.outputs], axis=1).astype(np.float64)
        finite = np.isfinite(cand)
        diff = np.abs(ref - np.where(finite, cand, np.nan))
        tolerance = float(spec.output_stride)  # one output cell, in input pixels
        per_sample, disagreements = [], []
        parts_ref = parts_found = people_ref = people_art = people_matched = photos = 0
        photo_people_ref = photo_people_art = 0
        clean = {k: np.nan_to_num(v, nan=0.0) for k, v in candidate.items()}  # NaNs are counted above; decode the rest
        for i, name in enumerate(names):
            want = self.people(reference, spec, i)
            got = self.people(clean, spec, i)
            matched, missing, partnered = match_people(want, got, tolerance)
            people_matched += partnered
            n_parts = sum(p.part_count for p in want)
            parts_ref += n_parts
            parts_found += matched
            people_ref += len(want)
            people_art += len(got)
            if is_photo(name):
                photos += 1
                photo_people_ref += len(want)
                photo_people_art += len(got)
            d = diff[i]
            per_sample.append({
                "name": name,
                "max_abs": _num(np.nanmax(d) if np.isfinite(d).any() else np.inf, nan_as_inf=True),
                "mean_abs": _num(np.nanmean(d) if np.isfinite(d).any() else np.inf, nan_as_inf=True),
                "agreement": matched / n_parts if n_parts else None,
                "drawn": n_parts,
                "people": [len(want), len(got)],
            })
            for person, part, where in missing:
                cell = [int(v // spec.output_stride) for v in want[person].keypoints[part, 1::-1]]
                moved = [int(v // spec.output_stride) for v in where[::-1]] if where is not None else "not found"
                disagreements.append({"sample": name, "person": person, "keypoint": spec.keypoints.names[part],
                                      "reference_cell": cell, "artifact_cell": moved})
        result.update({
            "non_finite": int(finite.size - finite.sum()),
            "max_abs": _num(np.max(np.where(np.isnan(diff), np.inf, diff))),
            "mean_abs": _num(np.nanmean(diff)) if np.isfinite(diff).any() else float("inf"),
            "cosine": _cosine(ref, np.where(finite, cand, np.nan)),
            "agreement": parts_found / parts_ref if parts_ref else None,
            "threshold": settings_of(spec.head).heat,
            "drawn": parts_ref,
            "tolerance_px": tolerance,
            "people": {"reference": people_ref, "artifact": people_art, "matched": people_matched},
            "reference_found": photo_people_ref if photos else people_ref,
            "artifact_found": photo_people_art if photos else people_art,
            "photos": photos or len(names),
            "per_sample": per_sample,
            "disagreements": disagreements[:MAX_LISTED],
            "disagreement_count": len(disagreements),
        })
        return result

    def parity_checks(self, metrics: dict, max_abs: float, min_agreement: float) -> list:
        from mdeploy.verify.parity import Check, evaluate

        checks = [c for c in evaluate(metrics, max_abs, min_agreement) if c.name != "finds people"]
        if not metrics.get("shape_ok"):
            return checks
        for c in checks:
            if c.name == "agreement" and c.value is None:
                checks[checks.index(c)] = Check("agreement", False, None, min_agreement,
                                                "the canonical model finds nobody on any sample: nothing to compare")
            elif c.name == "agreement" and metrics["disagreement_count"]:
                checks[checks.index(c)] = Check(c.name, c.ok, c.value, c.limit,
                                                f"{metrics['disagreement_count']} of {metrics['drawn']} parts of the model's "
                                                f"people not found within {metrics['tolerance_px']:g} px")
        people = metrics["people"]
        ref, cand, matched = people["reference"], people["artifact"], people.get("matched", people["artifact"])
        detail = f"{matched} of the canonical model's {ref} people found on {metrics['samples']} samples"
        if cand > matched:  # shown, not failed: a near-threshold person may appear with float16 weights
            detail += f"; {cand - matched} more that the model does not find"
        checks.append(Check("finds the model's people", matched == ref, matched, ref, detail))
        return checks

    def log_parity(self, metrics: dict) -> str:
        agree = "n/a" if metrics["agreement"] is None else f"{metrics['agreement']:.3f}"
        people = metrics["people"]
        return (f"max_abs {metrics['max_abs']:.3g}; {people['artifact']} people found, the model {people['reference']}; "
                f"{agree} of their {metrics['drawn']} parts found")

    def find_people(self, outputs: Outputs, names: list[str], spec) -> dict:
        from mdeploy.verify.people import is_photo

        photos = [i for i, n in enumerate(names) if is_photo(n)] or list(range(len(names)))
        per_photo = []
        for i in photos:
            people = self.people(outputs, spec, i)
            peak = float(np.max(outputs[OUTPUT_NAME][i][..., : layout_of(spec.head).parts]))
            per_photo.append({"name": names[i], "found": len(people), "parts": sum(p.part_count for p in people),
                              "peak": round(peak, 4)})
        return {
            "threshold": settings_of(spec.head).heat,
            "photos": per_photo,
            "people": sum(p["found"] for p in per_photo),
            "found": sum(p["parts"] for p in per_photo),
            "keypoints": len(spec.keypoints),
            "multi_person": True,
        }

    def people_check(self, metrics: dict) -> dict:
        shown = ", ".join(f"{p['name']} {p['found']} ({p['parts']} parts)" for p in metrics["photos"])
        ok = metrics["people"] >= 1
        detail = f"people found per photo: {shown}"
        if not ok:
            detail = f"no person on any photo: the model finds no one; {detail}"
        return {"check": "finds people on the photos", "ok": ok, "value": metrics["people"], "limit": 1, "detail": detail}

    def log_people(self, metrics: dict) -> str:
        return ", ".join(f"{p['name']}: {p['found']} people ({p['parts']} parts)" for p in metrics["photos"])

    # ---- training (data/pipeline_multi.py, train/paf_loss.py)
    def train_examples(self, ds) -> int:
        return ds.images  # whole images, each with all its people

    def train_dataset(self, ds, pre, keypoints, stride: int, head: dict, **options):
        from mdeploy.data.pipeline_multi import build_multi_dataset, group_by_image

        return build_multi_dataset(group_by_image(ds), pre, layout_of(head), **options)

    def train_loss(self, outputs: list, targets, settings):
        """OpenPose's stage-wise L2 on PAFs and heatmaps, masked where the data says nothing (crowds)."""
        from mdeploy.train.paf_loss import paf_loss

        return paf_loss(outputs, targets)

    def validate(self, model, pre, keypoints, stride: int, head: dict, val_ds) -> dict:
        from mdeploy.train.paf_loss import validate_people

        return validate_people(model, pre, layout_of(head), settings_of(head), val_ds)

    # ---- accuracy, drawing, glue
    def evaluate(self, runner, spec, ds, **options):
        from mdeploy.evaluate.multi import evaluate_people

        return evaluate_people(self, runner, spec, ds, **options)

    def detect(self, outputs: Outputs, spec, affine) -> list[np.ndarray]:
        from mdeploy.evaluate.decode import to_source

        found = []
        for person in self.people(outputs, spec, 0):
            points = to_source(person.keypoints, affine)
            points[~person.present, 2] = -1.0  # parts the decoder did not find
            found.append(points)
        return found

    def draw_threshold(self, spec) -> float:
        return 0.0  # every part of a decoded person passed the decoder's own thresholds

    def glue_files(self, platform: str, spec, package: str | None) -> dict[str, str]:
        from mdeploy.codegen.paf_glue import render_paf_decoder

        return render_paf_decoder(platform, layout_of(spec.head), settings_of(spec.head), package=package)

    def glue_estimator(self, spec):
        """Both outputs (heatmaps, then PAFs) to `PafPoseDecoder`, which runs the generated
        `PafDecoder` and maps every person's parts to the frame (templates/glue/*/PafPoseDecoder.*)."""
        from mdeploy.families import GlueEstimator

        return GlueEstimator(outputs=(OUTPUT_NAME, PAF_OUTPUT), decoder="PafPoseDecoder", templates=("PafPoseDecoder",))


def match_people(want: list[Person], got: list[Person], tolerance: float) -> tuple[int, list, int]:
    """Pair each person of `want` with one of `got` (greedy, closest first by mean distance over
    shared parts); return how many of `want`'s parts the partner has within `tolerance` pixels,
    the (person, part, the partner's position or None) it misses, and how many of `want` have a partner."""
    pairs = []
    for i, a in enumerate(want):
        for j, b in enumerate(got):
            shared = a.present & b.present
            if shared.any():
                dist = np.hypot(*(a.keypoints[shared, :2] - b.keypoints[shared, :2]).T)
                pairs.append((float(dist.mean()) - shared.sum() * 1e-6, i, j))
    partner: dict[int, int] = {}
    used: set[int] = set()
    for _, i, j in sorted(pairs):
        if i not in partner and j not in used:
            partner[i] = j
            used.add(j)
    matched, missing = 0, []
    for i, a in enumerate(want):
        b = got[partner[i]] if i in partner else None
        for part in np.flatnonzero(a.present):
            ok = (b is not None and b.present[part]
                  and float(np.hypot(*(a.keypoints[part, :2] - b.keypoints[part, :2]))) <= tolerance)
            if ok:
                matched += 1
            else:
                where = b.keypoints[part, :2] if b is not None and b.present[part] else None
                missing.append((i, int(part), where))
    return matched, missing, len(partner)
