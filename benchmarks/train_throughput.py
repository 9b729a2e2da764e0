"""CPU training throughput (images/s) of mv2_cpm and mv2_hourglass through the real training loop."""

from __future__ import annotations

import datetime
import sys
import tempfile
from pathlib import Path

from common import REPO, machine

sys.path.insert(0, str(REPO))

STEPS = 60


def main() -> None:
    from mdeploy.data.coco import load_coco
    from mdeploy.data.synthetic import SynthConfig, generate
    from mdeploy.keypoints import get_keypoint_set
    from mdeploy.spec import Preprocessing
    from mdeploy.train.loop import TrainSettings, train

    print(f"# training throughput, {datetime.date.today()}, {machine()}")
    kps = get_keypoint_set("aic14")
    with tempfile.TemporaryDirectory() as tmp:
        generate(SynthConfig(640, seed=1), Path(tmp) / "data")
        ds = load_coco(Path(tmp) / "data" / "annotations.json", Path(tmp) / "data" / "images", kps)
        for arch in ("mv2_cpm", "mv2_hourglass"):
            for batch in (8, 16):
                settings = TrainSettings(
                    arch=arch, params={}, epochs=10, batch_size=batch, optimizer="adam", lr=1e-3, decay=0.95,
                    decay_steps=10000, distribute="none", seed=0, checkpoint_every=10_000, max_steps=STEPS,
                )
                result = train(
                    settings, Preprocessing((192, 192), "rgb", (-1, 1)), kps, ds, None,
                    checkpoint_dir=Path(tmp) / f"ckpt-{arch}-{batch}", out_dir=Path(tmp) / f"out-{arch}-{batch}",
                    log=lambda line: None,
                )
                print(f"{arch} batch {batch}: {result.images_per_second:.1f} images/s ({STEPS} steps, 192 px)")


if __name__ == "__main__":
    main()
