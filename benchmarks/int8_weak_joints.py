"""Which joints int8 changes: PCKh of the PEFM CPM's fp32 and int8 files, split by how clearly
the fp32 file finds each joint.

Reads the builds `benchmarks/int8_fidelity.py` leaves in its `--out` folder (run that first).
For every labelled joint of every person in ../shared/data/realkp (AI Challenger, MPII, COCO),
the fp32 file's heatmap for that joint is *clear* or *weak* by the rule the accuracy gate uses
(`mdeploy/evaluate/decode.py: clear_peaks`: one peak of at least 0.3, no second local maximum
of half of it). Then, per int8 file (XNNPACK), it prints how many joints moved more than 8 px
(192 x 192 input pixels) from fp32's keypoint in each group, and on the visible joints of each
group, on the sets with head sizes (AI Challenger, MPII), PCKh@0.5 of fp32 and int8 and the
joints int8 gets wrong where fp32 is right (lost) and right where fp32 is wrong (gained).

    python benchmarks/int8_weak_joints.py [--builds /tmp/mdeploy-int8-fidelity]
"""

from __future__ import annotations

import datetime

import numpy as np
from common import machine
from int8_fidelity import outputs, people, saved_builds

MOVED_PX = 8.0


def main() -> None:
    files = {b.parent.name: b / "tflite" / "pefm_cpm_int8.tflite" for b in saved_builds()}
    from mdeploy.evaluate.decode import clear_peaks, decode_spec, to_source
    from mdeploy.evaluate.evaluator import prepare
    from mdeploy.evaluate.metrics import pck
    from mdeploy.spec import ModelSpec

    first = next(iter(files.values())).parents[1]
    spec = ModelSpec.load(first / "model" / "spec.json")
    fp32 = first / "tflite" / "pefm_cpm_fp32.tflite"

    def hits(points, affines, ds) -> np.ndarray:
        """[N, K] PCKh@0.5 per joint (the evaluator's rule: visible joints), NaN where not scored."""
        src = np.stack([to_source(points[i], affines[i]) for i in range(len(points))])
        truth = np.stack([s.keypoints for s in ds.samples])
        head = np.array([np.nan if s.head_size is None else s.head_size for s in ds.samples])
        per_joint = pck(src, truth, head, 0.5, min_visibility=2).hits
        return np.where(per_joint >= 0, per_joint.astype(float), np.nan)

    print(f"Machine: {machine()}; {datetime.date.today()}; XNNPACK\n")
    print("| set | int8 file | labelled joints clear / weak | moved > 8 px: clear / weak "
          "| clear joints: PCKh@0.5 fp32 / int8, lost / gained | weak joints: the same | all: the same |")
    print("|---|---|---|---|---|---|---|")
    for set_name, ds in people().items():
        x, affines = prepare(spec, ds, range(len(ds)))
        ref = outputs(fp32, "xnnpack", x)
        ref_points = decode_spec(ref, spec.output_stride, spec.decode)
        clear = clear_peaks(ref)
        labelled = np.stack([s.keypoints[:, 2] >= 1 for s in ds.samples])
        ref_hits = hits(ref_points, affines, ds)
        for name, path in files.items():
            points = decode_spec(outputs(path, "xnnpack", x), spec.output_stride, spec.decode)
            moved = np.linalg.norm(points[..., :2] - ref_points[..., :2], axis=-1) > MOVED_PX
            int8_hits = hits(points, affines, ds)

            cells = [f"{(labelled & clear).sum()} / {(labelled & ~clear).sum()}",
                     f"{(moved & labelled & clear).sum()} / {(moved & labelled & ~clear).sum()}"]
            for group in (clear, ~clear, np.ones_like(clear)):
                scored = group & np.isfinite(ref_hits)
                if not scored.any():
                    cells.append("-")
                    continue
                ref, new = ref_hits[scored], int8_hits[scored]
                cells.append(f"{100 * ref.mean():.1f} / {100 * new.mean():.1f}, {int(np.sum((ref == 1) & (new == 0)))} / "
                             f"{int(np.sum((ref == 0) & (new == 1)))} (of {scored.sum()})")
            print(f"| {set_name} | {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
