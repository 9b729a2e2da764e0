"""Which joints int8 changes: PCKh of the PEFM CPM's fp32 and int8 files, split by how clearly
the fp32 file finds each joint.

Reads the builds `benchmarks/int8_fidelity.py` leaves in its `--out` folder (run that first).
For every labelled joint of every person in ../shared/data/realkp (AI Challenger, MPII, COCO),
the fp32 file's heatmap for that joint is called *clear* when its highest value is at least
0.3 and no other local maximum (5x5) reaches half of it, and *weak* otherwise (a low peak, or
two near-equal ones). Then, per int8 file (XNNPACK), it prints how many joints moved more than
8 px (192 x 192 input pixels) from fp32's keypoint in each group, and PCKh@0.5 of fp32 and int8
on the visible joints of each group, on the sets with head sizes (AI Challenger, MPII).

    python benchmarks/int8_weak_joints.py [--builds /tmp/mdeploy-int8-fidelity]
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import numpy as np
from common import REPO, machine
from int8_fidelity import REALKP, outputs, people

CLEAR_PEAK, SECOND_PEAK, MOVED_PX = 0.3, 0.5, 8.0


def clear_joints(heatmaps: np.ndarray) -> np.ndarray:
    """[N, K] True where the joint's heatmap has one peak of at least CLEAR_PEAK."""
    from scipy.ndimage import maximum_filter

    out = np.zeros(heatmaps.shape[::3], bool)
    for i in range(heatmaps.shape[0]):
        for j in range(heatmaps.shape[-1]):
            h = heatmaps[i, ..., j]
            peaks = np.sort(h[(h == maximum_filter(h, size=5)) & (h > 0)])[::-1]
            top = peaks[0] if len(peaks) else 0.0
            out[i, j] = top >= CLEAR_PEAK and (len(peaks) < 2 or peaks[1] < SECOND_PEAK * top)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--builds", type=Path, default=Path("/tmp/mdeploy-int8-fidelity"))
    args = parser.parse_args()
    if not REALKP.is_dir():
        raise SystemExit(f"{REALKP} is absent: these measurements need ../shared")
    files = {d.name: d / "pefm_cpm" / "tflite" / "pefm_cpm_int8.tflite" for d in sorted(args.builds.iterdir())
             if (d / "pefm_cpm" / "tflite" / "pefm_cpm_int8.tflite").is_file()} if args.builds.is_dir() else {}
    if not files:
        raise SystemExit(f"no int8 builds under {args.builds}: run benchmarks/int8_fidelity.py --out {args.builds} first")
    sys.path.insert(0, str(REPO))
    from mdeploy.evaluate.decode import decode_spec, to_source
    from mdeploy.evaluate.evaluator import prepare
    from mdeploy.spec import ModelSpec

    first = next(iter(files.values())).parents[1]
    spec = ModelSpec.load(first / "model" / "spec.json")
    fp32 = first / "tflite" / "pefm_cpm_fp32.tflite"

    def hits(points, affines, ds) -> np.ndarray:
        """[N, K] within half a head size, NaN where not scored (not visible, or no head size)."""
        src = np.stack([to_source(points[i], affines[i]) for i in range(len(points))])
        truth = np.stack([s.keypoints for s in ds.samples])
        head = np.array([np.nan if s.head_size is None else s.head_size for s in ds.samples])
        ok = np.linalg.norm(src[..., :2] - truth[..., :2], axis=-1) <= 0.5 * np.nan_to_num(head)[:, None]
        return np.where((truth[..., 2] >= 2) & np.isfinite(head)[:, None], ok.astype(float), np.nan)

    print(f"Machine: {machine()}; {datetime.date.today()}; XNNPACK\n")
    print("| set | int8 file | labelled joints clear / weak | moved > 8 px: clear / weak "
          "| PCKh@0.5 clear joints fp32 / int8 | PCKh@0.5 weak joints fp32 / int8 | PCKh@0.5 all fp32 / int8 |")
    print("|---|---|---|---|---|---|---|")
    for set_name, ds in people().items():
        x, affines = prepare(spec, ds, range(len(ds)))
        ref = outputs(fp32, "xnnpack", x)
        ref_points = decode_spec(ref, spec.output_stride, spec.decode)
        clear = clear_joints(ref)
        labelled = np.stack([s.keypoints[:, 2] >= 1 for s in ds.samples])
        ref_hits = hits(ref_points, affines, ds)
        for name, path in files.items():
            points = decode_spec(outputs(path, "xnnpack", x), spec.output_stride, spec.decode)
            moved = np.linalg.norm(points[..., :2] - ref_points[..., :2], axis=-1) > MOVED_PX
            int8_hits = hits(points, affines, ds)

            def pckh(h, group):
                v = h[group & np.isfinite(h)]
                return f"{100 * v.mean():.1f}" if v.size else "-"

            cells = [f"{(labelled & clear).sum()} / {(labelled & ~clear).sum()}",
                     f"{(moved & labelled & clear).sum()} / {(moved & labelled & ~clear).sum()}"]
            for group in (clear, ~clear, np.ones_like(clear)):
                cells.append(f"{pckh(ref_hits, group)} / {pckh(int8_hits, group)} (n={int(np.isfinite(ref_hits[group]).sum())})")
            print(f"| {set_name} | {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
