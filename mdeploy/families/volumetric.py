"""3-D pose from a person crop: one volume of depth bins x grid cells per joint (MobileHumanPose).

**Outputs.** One canonical output, either
- `volume` [1, H, W, J*D]: the raw volumes, joint j's depth bin d in the channel the
  layout says (`joint_major`: j*D + d, a PyTorch export transposed to NHWC); or
- `coords` [1, J, 3], when the model ends in the soft-argmax (`model.volume.in_graph_softargmax`,
  or an architecture built with `soft_argmax: true`): x, y in grid cells and z in depth
  bins, cell i at coordinate i. The grid then cannot be read from the output, so the spec's
  `head.stride` gives it (the architecture's, or `model.volume.stride` for an import).
Either way the decode is the same (evaluate/volumetric.py): soft-argmax over each joint's
whole volume (done by numpy here for `volume`, by the graph for `coords`), cells to input
pixels to source pixels through the crop's affine, bins to mm relative to the root joint.

**Spec head.** `output`, `in_graph_softargmax`, `joints`, `root` (the keypoint set's root
joint), `layout` (depth bins, channel order, depth range in mm, cell origin), `stride` and
`runtime`: what an app must supply at run time. The person box of the crop, always (the
model is fed person crops). For camera-space joints, the camera's focal length and
principal point in source pixels, and the root's absolute depth: `given` by the app each
frame (ground truth, or a root-depth estimate such as RootNet's; the default) or assumed
`constant` (`root_depth_mm`). Root-relative joints and their 2-D projection need neither.

**Parity in mm.** Both sides are decoded; joints are compared in the volume's own metric
scale, MobileHumanPose's: the crop spans `depth_range_mm` across x and y as the volume does
in z (its 2 m `bbox_3d_shape` cube), so one cell is depth_range/W mm and one bin
depth_range/D mm. Each joint is taken relative to the root joint (the root itself is
compared where it is, so a skeleton moved whole is caught too). A joint agrees when the
artifact puts it within `model.volume.parity_mm` (10 mm by default: a sixth of one cell or
bin of MobileHumanPose's 32-cell, 32-bin, 2 m volume; good models are 50-80 mm MPJPE off the
truth, so 10 mm moves a score visibly while float16 rounding stays far below it). `agreement`
is the share of joints that agree (held to the artifact's `min_agreement`). The raw tensor is
held to `max_abs` too, scaled by the reference's largest magnitude when that exceeds 1:
volume scores are unbounded logits (values of 20 to 40 are common), unlike 0..1 heatmaps.

**Finding people** is weaker than for heatmaps, and says so: a crop model has no
threshold that separates "a person" from "no person". On the package photos the check asks
that the model commits to places: a joint counts as found when its softmax mass is
concentrated (its spread in x and y is under half that of a flat volume), and a person is
found when half the joints are and the decoded skeleton is not collapsed to one cell. With
`coords` only, the volume is not seen: only the collapse is checked. A wrong channel order
or value range usually shows as flat volumes; a model that is confidently wrong passes.

**Accuracy** on a 3-D split (`coco3d` or `h36m` sources, data/split3d.py): each person's
crop is decoded, lifted to camera space with the frame's camera and the ground-truth root
depth (the protocol of MobileHumanPose's own evaluation), and scored by MPJPE (primary),
PA-MPJPE and 3DPCK@150mm (evaluate/metrics3d.py), in mm; the accuracy gate reads an error's
increase as its drop (evaluate/metrics.LOWER_IS_BETTER).

**Training** (MobileHumanPose's way): person crops of a 3-D split (`coco3d`, `h36m`, or
`synthetic` with `keypoints3d`) through the crop geometry plus scale, rotation, shift and
flip augmentation (a flip mirrors x and swaps left and right joints; depth is kept), targets
per joint (x, y cells, z bins, visible) in the decode's own units (data/pipeline3d.py); the
loss is L1 on the soft-argmax of the volume, or on `coords` when the graph ends in it, over
visible joints (train/volume_loss.py). Each epoch is validated by MPJPE through `evaluate`;
the loop keeps early stopping the right way round (evaluate/metrics.LOWER_IS_BETTER).

**App glue**: the common `PoseEstimator` reads the one output (`volume`, or `coords`; an
8-bit one dequantized with its own scale) and hands it to `VolumePoseDecoder`
(`glue_estimator`), which runs the generated `VolumeDecoder` (`glue_files`: the soft-argmax,
cells to pixels, bins to mm, rendered from the layout) with the frame's preprocessing geometry
as the crop's affine map: the app feeds the frame, or the person box it crops, as it feeds any
model. It lists one person whose keypoints have score 1 and their depth in mm (root-relative,
or absolute with the recipe's constant root depth), the joints `detect` and `joint_extras`
give; the demo apps colour joints and bones by that depth.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mdeploy.errors import InputError, ModelError
from mdeploy.families import Family, Outputs
from mdeploy.families.heatmap import stride_of

VOLUME_OUTPUT = "volume"
COORDS_OUTPUT = "coords"
DEFAULT_DEPTH_BINS = 32  # MobileHumanPose's depth_dim
SPREAD_FRACTION = 0.5  # a joint is found when its spread is under this share of a flat volume's
MIN_SKELETON_SPREAD = 0.5  # cells: a skeleton whose joints spread less has collapsed to one place
MAX_LISTED = 12


# ---------------------------------------------------------------------------- the spec's head, as data

def layout_of(spec):
    """The spec's `VolumeLayout`, its grid read from the volume (or input size / stride for `coords`)."""
    from mdeploy.evaluate.volumetric import VolumeLayout

    head = spec.head
    data = head["layout"]
    if head["output"] == VOLUME_OUTPUT:
        height, width = int(spec.output.shape[1]), int(spec.output.shape[2])
    else:
        height, width = spec.input.shape[1] // spec.output_stride, spec.input.shape[2] // spec.output_stride
    return VolumeLayout(int(head["joints"]), int(data["depth"]), height, width, data["order"], float(data["depth_range_mm"]),
                        data["cell_origin"])


def input_size(spec) -> tuple[int, int]:
    return int(spec.input.shape[1]), int(spec.input.shape[2])


def output_of(outputs: Outputs, name: str) -> np.ndarray:
    """The family's one output; a runner that cannot name it (LiteRT on a signature other than
    image -> heatmaps) hands it back as its only output."""
    if name in outputs:
        return np.asarray(outputs[name])
    if len(outputs) == 1:
        return np.asarray(next(iter(outputs.values())))
    raise ModelError(f"the runner gives the outputs {', '.join(outputs)}; a volumetric model has one, {name}")


def coords_of(outputs: Outputs, spec) -> np.ndarray:
    """[N, J, 3] soft-argmax coordinates (x, y cells, z bins) of every sample."""
    from mdeploy.evaluate.volumetric import soft_argmax

    out = output_of(outputs, spec.output.name).astype(np.float64)
    if spec.head["output"] == COORDS_OUTPUT:
        return out.reshape(out.shape[0], -1, 3)
    return soft_argmax(layout_of(spec).volumes(np.nan_to_num(out, nan=-np.inf, posinf=np.inf)))


def volume_mm(coords: np.ndarray, layout) -> np.ndarray:
    """[N, J, 3] cells and bins -> mm in the volume's own scale (the crop spans depth_range_mm in x, y and z)."""
    r = layout.depth_range_mm
    return np.asarray(coords, np.float64) * np.array([r / layout.width, r / layout.height, r / layout.depth])


def root_relative_errors(reference_mm: np.ndarray, candidate_mm: np.ndarray, root: int) -> np.ndarray:
    """[N, J] mm: each joint relative to its root on both sides, compared; the root where it is."""
    ref = reference_mm - reference_mm[:, root : root + 1]
    cand = candidate_mm - candidate_mm[:, root : root + 1]
    err = np.linalg.norm(ref - cand, axis=2)
    err[:, root] = np.linalg.norm(reference_mm[:, root] - candidate_mm[:, root], axis=1)
    return np.where(np.isfinite(err), err, np.inf)


def concentration(volumes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N, J, D, H, W] scores -> ([N, J] spread in x, y as a share of a flat volume's, [N, J] peak mass
    as a multiple of a flat volume's)."""
    n, j, d, h, w = volumes.shape
    flat = volumes.reshape(n, j, -1).astype(np.float64)
    p = np.exp(flat - flat.max(axis=2, keepdims=True))
    p = (p / p.sum(axis=2, keepdims=True)).reshape(n, j, d, h, w)
    px, py = p.sum(axis=(2, 3)), p.sum(axis=(2, 4))
    xs, ys = np.arange(w), np.arange(h)
    var_x = (px * xs**2).sum(-1) - (px * xs).sum(-1) ** 2
    var_y = (py * ys**2).sum(-1) - (py * ys).sum(-1) ** 2
    uniform = np.sqrt((w * w - 1) / 12.0 + (h * h - 1) / 12.0)
    spread = np.sqrt(np.maximum(var_x + var_y, 0.0)) / max(uniform, 1e-9)
    return spread, p.reshape(n, j, -1).max(axis=2) * d * h * w


class VolumetricFamily(Family):
    name = "volumetric"
    description = "3-D single person: a volume of depth bins per joint (MobileHumanPose)"
    camera_space = True

    def output_names(self, head: dict) -> tuple[str, ...]:
        return (head.get("output", VOLUME_OUTPUT),)

    def head(self, recipe) -> dict:
        from mdeploy.keypoints import get_keypoint_set
        from mdeploy.recipe.schema import VolumeSection

        section = recipe.model.volume or VolumeSection()
        kps = get_keypoint_set(recipe.model.keypoints)
        if kps.root is None:
            raise InputError(
                f"keypoint set {kps.name} has no root joint; a 3-D model's depths are relative to one",
                where=recipe.where("model", "keypoints"), hint="use a 3-D keypoint set: h36m17 or muco21",
            )
        depth, soft, stride = section.depth_bins, section.in_graph_softargmax, section.stride
        if recipe.model.arch is not None:
            from mdeploy.models import get_arch

            info = get_arch(recipe.model.arch)
            params = info.params(recipe.model.params)
            given = {"depth_bins": (depth, params.get("depth_bins")), "in_graph_softargmax": (soft, params.get("soft_argmax")),
                     "stride": (stride, info.output_stride)}
            for key, (mine, arch) in given.items():
                if mine is not None and arch is not None and mine != arch:
                    raise InputError(f"model.volume.{key} is {mine} but {recipe.model.arch} is built with {arch}",
                                     where=recipe.where("model", "volume", key), hint="leave it out: the architecture's value is used")
            depth = depth or params.get("depth_bins") or DEFAULT_DEPTH_BINS
            soft = bool(params.get("soft_argmax")) if soft is None else soft
            stride = stride or info.output_stride
        depth = int(depth or DEFAULT_DEPTH_BINS)
        soft = bool(soft)
        return {
            "output": COORDS_OUTPUT if soft else VOLUME_OUTPUT,
            "in_graph_softargmax": soft,
            "joints": len(kps),
            "root": kps.root,
            "layout": {"depth": depth, "order": section.order, "depth_range_mm": float(section.depth_range_mm),
                       "cell_origin": section.cell_origin},
            "stride": stride,
            "parity_mm": float(section.parity_mm),
            "runtime": {
                "person_box": "the crop box of the person, in source pixels (the model is fed person crops)",
                "camera": {"needed_for": "camera-space joints", "intrinsics": ["fx", "fy", "cx", "cy"], "units": "source pixels"},
                "root_depth": {"source": section.root_depth, "mm": section.root_depth_mm,
                               "needed_for": "camera-space joints (the volume gives depth relative to the root)"},
            },
        }

    def canonical(self, raw, head: dict, where: str | None = None) -> dict:
        name = self.output_names(head)[0]
        if isinstance(raw, dict):
            raw = raw[name] if name in raw else list(raw.values())[-1]
        if isinstance(raw, (list, tuple)):
            raw = raw[-1]  # a training model's outputs: the final one
        return {name: raw}

    def planned_channels(self, recipe, keypoints: int) -> dict[str, int]:
        head = self.head(recipe)
        return {head["output"]: keypoints * head["layout"]["depth"]}

    def check_outputs(self, recipe, size: tuple[int, int], shapes: dict[str, tuple[int, ...]], where: Callable) -> int:
        head = self.head(recipe)
        name = head["output"]
        shape = tuple(shapes[name])
        joints, depth = head["joints"], head["layout"]["depth"]
        kps = recipe.model.keypoints
        if name == COORDS_OUTPUT:
            if shape != (1, joints, 3):
                raise ModelError(
                    f"the model output has shape {list(shape)}; a model that ends in the soft-argmax gives [1, {joints}, 3] "
                    f"(x, y, z of each of {kps}'s {joints} joints)",
                    where=where("model", "import", "outputs"),
                    hint="a raw volume [1, H, W, joints x depth] needs model.volume.in_graph_softargmax: false",
                )
            stride = head["stride"]
            if size[0] % stride or size[1] % stride:
                raise ModelError(f"the input {size[0]}x{size[1]} is not a whole number of {stride}-pixel volume cells",
                                 where=where("model", "input", "size"))
            return stride
        if len(shape) == 3 and shape[1:] == (joints, 3):
            raise ModelError(
                f"the model output has shape {list(shape)}: coordinates, not a volume",
                where=where("model", "import", "outputs"),
                hint="the soft-argmax is in the graph: set model.volume.in_graph_softargmax: true (and model.volume.stride)",
            )
        if len(shape) != 4 or shape[0] != 1:
            raise ModelError(
                f"the model output has shape {list(shape)}; a volumetric model gives NHWC [1, height, width, joints x depth bins]",
                where=where("model", "import", "outputs"),
            )
        _, oh, ow, channels = shape
        if channels != joints * depth:
            if channels % joints:
                message = (f"the volume has {channels} channels, which do not divide into {joints} joints ({kps}) "
                           f"x depth bins (model.volume.depth_bins {depth}: {joints * depth} channels)")
            else:
                message = (f"the volume has {channels} channels = {joints} joints ({kps}) x {channels // joints} depth bins, "
                           f"but model.volume.depth_bins is {depth} ({joints} x {depth} = {joints * depth} channels)")
            nchw = shape[1] == joints * depth
            raise ModelError(
                message + (" (it looks like NCHW: channels first)" if nchw else ""),
                where=where("model", "import", "outputs"),
                hint="check model.keypoints and model.volume.depth_bins against the model's output",
            )
        stride = stride_of(size, (oh, ow), where)
        if head["stride"] is not None and stride != head["stride"]:
            raise ModelError(f"the volume's grid is the input / {stride}, but the stride is {head['stride']}",
                             where=where("model", "import", "outputs"))
        return stride

    # ---- verification
    def parity(self, reference: Outputs, candidate: Outputs, names: list[str], spec) -> dict:
        from mdeploy.verify.parity import _cosine, _num

        name = spec.output.name
        ref = output_of(reference, name)
        cand = output_of(candidate, name)
        result: dict = {
            "output": name,
            "samples": len(names),
            "reference_shape": list(ref.shape),
            "artifact_shape": list(cand.shape),
            "shape_ok": tuple(ref.shape) == tuple(cand.shape),
        }
        if not result["shape_ok"]:
            return result
        layout = layout_of(spec)
        root = spec.keypoints.names.index(spec.head["root"])
        finite = np.isfinite(cand)
        r64 = ref.astype(np.float64)
        c64 = np.where(finite, cand, np.nan).astype(np.float64)
        diff = np.abs(r64 - c64)
        tolerance = float(spec.head.get("parity_mm", 10.0))
        ref_mm = volume_mm(coords_of({name: ref}, spec), layout)
        cand_mm = volume_mm(coords_of({name: np.where(finite, cand, 0.0)}, spec), layout)
        err = root_relative_errors(ref_mm, cand_mm, root)  # [N, J]
        err = np.where(finite.reshape(len(names), -1).all(axis=1)[:, None], err, np.inf)
        agree = err <= tolerance
        per_sample, disagreements = [], []
        for i, sample in enumerate(names):
            d = diff[i]
            per_sample.append({
                "name": sample,
                "max_abs": _num(np.nanmax(d) if np.isfinite(d).any() else np.inf, nan_as_inf=True),
                "mean_abs": _num(np.nanmean(d) if np.isfinite(d).any() else np.inf, nan_as_inf=True),
                "agreement": float(agree[i].mean()),
                "drawn": int(agree.shape[1]),
                "max_joint_mm": _num(err[i].max()),
                "mean_joint_mm": _num(err[i].mean()),
            })
            for k in np.flatnonzero(~agree[i]):
                disagreements.append({"sample": sample, "keypoint": spec.keypoints.names[k], "error_mm": _num(err[i, k]),
                                      "reference_mm": np.round(ref_mm[i, k], 1).tolist(),
                                      "artifact_mm": np.round(cand_mm[i, k], 1).tolist()})
        result.update({
            "non_finite": int(finite.size - finite.sum()),
            "max_abs": _num(np.max(np.where(np.isnan(diff), np.inf, diff))),
            "mean_abs": _num(np.nanmean(diff)) if np.isfinite(diff).any() else float("inf"),
            "scale": round(max(1.0, float(np.max(np.abs(r64)))), 4),
            "cosine": _cosine(r64, c64),
            "agreement": float(agree.mean()),
            "tolerance_mm": tolerance,
            "max_joint_mm": _num(err.max()),
            "mean_joint_mm": _num(err.mean()),
            "threshold": tolerance,
            "drawn": int(agree.size),
            "per_sample": per_sample,
            "disagreements": disagreements[:MAX_LISTED],
            "disagreement_count": len(disagreements),
        })
        return result

    def parity_checks(self, metrics: dict, max_abs: float, min_agreement: float) -> list:
        from mdeploy.verify.parity import Check

        checks = [Check("shape", metrics["shape_ok"], metrics["artifact_shape"], metrics["reference_shape"],
                        "" if metrics["shape_ok"] else "output shape differs from the canonical model")]
        if not metrics["shape_ok"]:
            return checks
        bad = metrics["non_finite"]
        checks.append(Check("finite", bad == 0, bad, 0, f"{bad} NaN/inf values" if bad else ""))
        scale = metrics["scale"]
        limit = max_abs * scale
        worst = max(metrics["per_sample"], key=lambda s: s["max_abs"], default=None)
        detail = f"worst on {worst['name']}" if worst else ""
        if scale > 1:
            detail += f"; tolerance {max_abs:g} x {scale:g}, the reference's largest magnitude (volume scores are logits)"
        checks.append(Check("max_abs", metrics["max_abs"] <= limit, metrics["max_abs"], round(limit, 6), detail))
        tol = metrics["tolerance_mm"]
        detail = f"joints within {tol:g} mm of the canonical model's (root-relative); worst {metrics['max_joint_mm']:.3g} mm"
        if metrics["disagreement_count"]:
            detail += f"; {metrics['disagreement_count']} of {metrics['drawn']} joints moved further"
        checks.append(Check("agreement", metrics["agreement"] >= min_agreement, metrics["agreement"], min_agreement, detail))
        return checks

    def log_parity(self, metrics: dict) -> str:
        return (f"max_abs {metrics['max_abs']:.3g}; joints within {metrics['tolerance_mm']:g} mm: {metrics['agreement']:.3f} "
                f"of {metrics['drawn']} (worst {metrics['max_joint_mm']:.3g} mm)")

    def find_people(self, outputs: Outputs, names: list[str], spec) -> dict:
        from mdeploy.verify.people import is_photo

        photos = [i for i, n in enumerate(names) if is_photo(n)] or list(range(len(names)))
        joints = len(spec.keypoints)
        coords = coords_of(outputs, spec)[photos]
        spread_skeleton = np.sqrt(np.nanvar(coords[:, :, 0], axis=1) + np.nanvar(coords[:, :, 1], axis=1))
        if spec.head["output"] == VOLUME_OUTPUT:
            volumes = layout_of(spec).volumes(output_of(outputs, spec.output.name))[photos]
            spread, peak = concentration(volumes)
            found = (spread <= SPREAD_FRACTION).sum(axis=1)
            peaks = peak.max(axis=1)
        else:  # the soft-argmax is in the graph: only a collapsed skeleton can be seen
            found = np.where(spread_skeleton >= MIN_SKELETON_SPREAD, joints, 0)
            peaks = np.full(len(photos), np.nan)
        per_photo = []
        for k, i in enumerate(photos):
            person = bool(found[k] * 2 >= joints and spread_skeleton[k] >= MIN_SKELETON_SPREAD)
            per_photo.append({"name": names[i], "found": int(found[k]), "person": person,
                              "peak": None if np.isnan(peaks[k]) else round(float(peaks[k]), 2),
                              "skeleton_cells": round(float(spread_skeleton[k]), 3)})
        return {
            "threshold": SPREAD_FRACTION,
            "photos": per_photo,
            "people": sum(p["person"] for p in per_photo),
            "found": sum(p["found"] for p in per_photo),
            "keypoints": joints,
            "multi_person": False,
            "rule": (f"a joint is found when its softmax spread (x, y) is under {SPREAD_FRACTION:g} x a flat volume's; "
                     f"a person when half the joints are and the skeleton spans at least {MIN_SKELETON_SPREAD:g} cell"),
        }

    def people_check(self, metrics: dict) -> dict:
        shown = ", ".join(f"{p['name']} {p['found']}/{metrics['keypoints']} (skeleton {p['skeleton_cells']:g} cells)"
                          for p in metrics["photos"])
        ok = metrics["people"] >= 1
        detail = f"concentrated joints per photo: {shown}"
        if not ok:
            detail = f"no photo gives a committed skeleton (flat volumes or collapsed joints): the model sees no one; {detail}"
        return {"check": "finds people on the photos", "ok": ok, "value": metrics["people"], "limit": 1, "detail": detail}

    def log_people(self, metrics: dict) -> str:
        return ", ".join(f"{p['name']}: {p['found']} of {metrics['keypoints']} joints concentrated" for p in metrics["photos"])

    # ---- training (data/pipeline3d.py, train/volume_loss.py)
    def train_examples(self, ds) -> int:
        return len(ds)  # person crops

    def train_dataset(self, ds, pre, keypoints, stride: int, head: dict, **options):
        """Person crops and per-joint (x, y cells, z bins, visible) targets, augmented with flips by the set's permutation."""
        from mdeploy.data.pipeline3d import build_volume_dataset, layout_from_head

        if not hasattr(ds, "frames"):
            raise InputError("training a 3-D model needs a split with 3-D joints and cameras "
                             "(data sources coco3d or h36m, or synthetic with keypoints3d)")
        return build_volume_dataset(ds, pre, keypoints, layout_from_head(head, pre.size, stride), **options)

    def train_loss(self, outputs: list, targets, settings):
        """L1 on the soft-argmax of the volume (or on the coords of a model that ends in it), visible joints only."""
        from mdeploy.train.volume_loss import volume_loss

        return volume_loss(outputs, targets, settings.head)

    def validate(self, model, pre, keypoints, stride: int, head: dict, val_ds) -> dict:
        """MPJPE (primary; lower is better), PA-MPJPE, 3DPCK through `evaluate`, on the validation split."""
        from mdeploy.train.volume_loss import validate_volume

        return validate_volume(model, pre, keypoints, stride, head, val_ds)

    # ---- accuracy, drawing, glue
    def evaluate(self, runner, spec, ds, *, batch_size: int = 16, limit: int | None = None, progress=None, **_):
        """MPJPE (primary), PA-MPJPE, 3DPCK@150mm and its AUC, in mm, on a 3-D split (see the module docstring)."""
        from mdeploy.camera import Camera
        from mdeploy.data.split3d import Split3D
        from mdeploy.evaluate.evaluator import EvalResult, prepare
        from mdeploy.evaluate.metrics3d import evaluate_3d, mpjpe, pa_mpjpe
        from mdeploy.evaluate.volumetric import decode_coords
        from mdeploy.families import run_outputs

        if not hasattr(ds, "frames"):
            raise InputError("3-D accuracy needs a split with 3-D joints and cameras (data sources coco3d or h36m)")
        if not hasattr(ds, "samples"):
            ds = Split3D(ds)
        layout = layout_of(spec)
        root = spec.keypoints.names.index(spec.head["root"])
        n = min(len(ds), limit) if limit else len(ds)
        frames = ds.frames[:n]
        truth = np.stack([f.joints for f in frames]).astype(np.float64)  # [N, J, 3] camera space, mm
        pred = np.full_like(truth, np.nan)
        for start in range(0, n, batch_size):
            idx = list(range(start, min(n, start + batch_size)))
            batch, affines = prepare(spec, ds, idx)
            coords = coords_of(run_outputs(runner, batch), spec)
            for j, i in enumerate(idx):
                frame = frames[i]
                root_depth = frame.joints[root, 2]
                if not np.isfinite(root_depth):
                    continue  # no root: not scored by root-aligned metrics
                camera = Camera(frame.camera.fx, frame.camera.fy, frame.camera.cx, frame.camera.cy)
                pose = decode_coords(coords[j], layout, input_size(spec), affines[j], root_depth=float(root_depth),
                                     camera=camera, back_project=True)
                pred[i] = pose.camera
            if progress:
                progress(idx[-1] + 1, n)
        visible = np.isfinite(truth).all(axis=2)
        scores = evaluate_3d(pred, truth, root, visible)
        metrics = {k: _round(scores[k]) for k in ("mpjpe", "pa_mpjpe", "pck3d@150", "auc")}
        per_mpjpe = mpjpe(pred, truth, root, visible).per_joint()
        per_pa = pa_mpjpe(pred, truth, visible).per_joint()
        per_joint = {name: {"mpjpe": _round(per_mpjpe[k]), "pa_mpjpe": _round(per_pa[k]), "visible": int(visible[:, k].sum())}
                     for k, name in enumerate(spec.keypoints.names)}
        scored = int((visible[:, root] & np.isfinite(pred[:, root]).all(axis=1)).sum())
        normalisers = {"alignment": "mpjpe: root joints aligned; pa_mpjpe: Procrustes (scale, rotation, translation)",
                       "root_depth": "ground truth, as MobileHumanPose evaluates root-relative pose", "units": "mm"}
        return EvalResult(metrics, per_joint, n, scored, "mpjpe", normalisers)

    def pose3d(self, outputs: Outputs, spec, affine=None, *, root_depth: float | None = None, focal=None, principal=None,
               back_project: bool = False):
        """One sample's outputs -> its `Pose3D` (source pixels, depth in mm, camera space when asked:
        that needs the focal length, principal point and root depth, else an InputError naming them)."""
        from mdeploy.camera import camera_from
        from mdeploy.evaluate.volumetric import decode_coords

        runtime = spec.head.get("runtime", {}).get("root_depth", {})
        if root_depth is None and runtime.get("source") == "constant":
            root_depth = runtime.get("mm")
        camera = None
        if back_project or (focal is not None and principal is not None):
            camera = camera_from(focal, principal)
        return decode_coords(coords_of(outputs, spec)[0], layout_of(spec), input_size(spec), affine, root_depth=root_depth,
                             camera=camera, back_project=back_project)

    def detect(self, outputs: Outputs, spec, affine) -> list[np.ndarray]:
        """The joints' 2-D projection in source pixels, each at confidence 1 (the soft-argmax always places a joint)."""
        image = self.pose3d(outputs, spec, affine).image
        return [np.concatenate([image, np.ones((len(image), 1))], axis=1).astype(np.float32)]

    def draw_threshold(self, spec) -> float:
        return 0.0

    def joint_extras(self, outputs: Outputs, spec, affine, *, root_depth: float | None = None, focal=None,
                     principal=None) -> list[list[dict]]:
        """Each joint's depth in mm (root-relative unless a root depth is given or the spec's is a
        constant) and, with the camera's focal length and principal point, its camera-space
        position `camera_mm` [X, Y, Z] (x right, y down, z forward; `mdeploy predict --focal`)."""
        lift = focal is not None and principal is not None
        pose = self.pose3d(outputs, spec, affine, root_depth=root_depth, focal=focal, principal=principal, back_project=lift)
        rows = [{"depth_mm": round(float(d), 1), "depth_relative_to_root": bool(pose.relative)} for d in pose.depth]
        if pose.camera is not None:
            for row, point in zip(rows, pose.camera, strict=True):
                row["camera_mm"] = [round(float(v), 1) for v in point]
        return [rows]

    def skeleton3d(self, outputs: Outputs, spec, affine) -> np.ndarray:
        """[J, 3] mm relative to the root joint, in the volume's own metric scale (as parity compares):
        x, y from `pose3d`'s joints in model-input pixels (the crop spans depth_range_mm across the
        input, as the volume does in depth), z its depth. Root-relative, so the crop's place in the
        source image (`affine`) does not change it."""
        pose = self.pose3d(outputs, spec, None)
        height, width = input_size(spec)
        span = layout_of(spec).depth_range_mm
        joints = np.column_stack([pose.image[:, 0] * span / width, pose.image[:, 1] * span / height, pose.depth])
        return joints - joints[spec.keypoints.names.index(spec.head["root"])]

    def glue_files(self, platform: str, spec, package: str | None) -> dict[str, str]:
        """The app's `VolumeDecoder` (soft-argmax, crop box, depth in mm, back-projection), rendered
        from the spec's layout (codegen/volume_glue.py; checked on the JVM against this decode)."""
        from mdeploy.codegen.volume_glue import render_volume_decoder

        runtime = spec.head.get("runtime", {}).get("root_depth", {})
        assumed = runtime.get("mm") if runtime.get("source") == "constant" else None  # as pose3d assumes it
        return render_volume_decoder(platform, layout_of(spec), package=package, input_size=spec.preprocessing.size,
                                     keypoints=spec.keypoints, resize=spec.preprocessing.resize, root_depth_mm=assumed)

    def glue_estimator(self, spec):
        """The one output to `VolumePoseDecoder` (templates/glue/*/VolumePoseDecoder.*): the generated
        `VolumeDecoder` with the frame's geometry as the crop's map; one person, depth per keypoint."""
        from mdeploy.families import GlueEstimator

        return GlueEstimator(outputs=(spec.output.name,), decoder="VolumePoseDecoder", templates=("VolumePoseDecoder",))


def _round(v) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), 3)
