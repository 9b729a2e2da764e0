"""Input pipeline throughput: decode + augmentation + heatmaps + normalization, no model.

Target: at least 200 images/s on 2 cores (a GPU training step must never wait on it).
"""

from __future__ import annotations

import datetime
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, machine

sys.path.insert(0, str(REPO))


def main() -> None:
    from mdeploy.data.coco import load_coco
    from mdeploy.data.pipeline import Augment, build_dataset
    from mdeploy.data.synthetic import SynthConfig, generate
    from mdeploy.keypoints import get_keypoint_set
    from mdeploy.spec import Preprocessing

    print(f"# input pipeline, {datetime.date.today()}, {machine()}")
    kps = get_keypoint_set("aic14")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        generate(SynthConfig(1024, seed=1, size=192), Path(tmp))
        gen = time.perf_counter() - start
        print(f"synthetic generation: {1024 / gen:.0f} images/s (1024 images, 192 px, JPEG)")
        ds = load_coco(Path(tmp) / "annotations.json", Path(tmp) / "images", kps)
        for stride, label in ((2, "stride 2 (CPM)"), (4, "stride 4 (hourglass)")):
            pre = Preprocessing((192, 192), "rgb", (-1, 1))
            data = build_dataset(ds, pre, kps, stride, batch_size=16, seed=0, epochs=3, augment=Augment())
            it = iter(data)
            for _ in range(8):  # warm-up
                next(it)
            n, t0 = 0, time.perf_counter()
            for batch in it:
                n += int(batch[0].shape[0])
            rate = n / (time.perf_counter() - t0)
            print(f"pipeline {label}: {rate:.0f} images/s ({n} images, augmentation + heatmaps, 192 px)")


if __name__ == "__main__":
    main()
