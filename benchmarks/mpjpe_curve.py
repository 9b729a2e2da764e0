"""MPJPE against training steps for the 3-D recipe, and latency and size of its TFLite variants.

    python benchmarks/mpjpe_curve.py [--recipe recipes/lpski_synthetic.yaml] [--steps 25,50,100,200] [--runs 30]

1. Builds the recipe as CI does (`mdeploy build`, a child process, timed): the artifacts,
   their sizes and each artifact's MPJPE / PA-MPJPE per validation split come from its
   manifest.
2. The curve: trains the recipe's model with mdeploy's own loop (same data, seed and
   settings), stopping at each checkpoint in --steps and resuming from it (the input stream is
   a function of (seed, position), so the runs are one uninterrupted run cut in pieces), and
   scores it there on every validation split of the recipe (synthetic people; the real
   Human3.6M frames where ../shared is present) through the family's evaluation path.
3. Latency of every TFLite variant of the build, interleaved in one child process (LiteRT,
   XNNPACK, 2 threads): after warm-up, each round invokes every variant once, so drift in the
   machine's load hits them alike; median and p90 per variant.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import MDEPLOY, REPO, interleaved_latency, machine

sys.path.insert(0, str(REPO))

def build(recipe: Path, out: Path, env: dict) -> tuple[float, dict]:
    start = time.perf_counter()
    proc = subprocess.run(MDEPLOY + ["build", str(recipe), "--out", str(out), "--ci", "--json"], env=env,
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0, 1):  # 1: a gate failed, the artifacts are still there
        raise SystemExit(f"build failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    name = next(d for d in out.iterdir() if d.is_dir() and not d.name.startswith("."))
    return elapsed, json.loads((name / "manifest.json").read_text()) | {"_dir": str(name)}


def curve(recipe_path: Path, steps: list[int], tmp: Path) -> list[dict]:
    """(step, loss, metrics per validation split) at each checkpoint, by mdeploy's training loop."""
    from mdeploy.data.h36m import load_coco3d
    from mdeploy.data.split3d import Split3D, load_split3d
    from mdeploy.data.synthetic3d import Synth3DConfig, generate
    from mdeploy.families import get_family, recipe_family
    from mdeploy.keypoints import get_keypoint_set
    from mdeploy.models import get_arch
    from mdeploy.recipe import load_recipe
    from mdeploy.spec import preprocessing_from_recipe
    from mdeploy.train.loop import TrainSettings, train

    recipe = load_recipe(recipe_path)
    m, t = recipe.model, recipe.train
    kps = get_keypoint_set(m.keypoints)
    family = get_family(recipe_family(recipe))

    def split(name: str, section) -> Split3D | None:
        if section.synthetic is not None:
            src = section.synthetic
            folder = tmp / "data" / name
            generate(Synth3DConfig(src.count, src.seed, src.size, src.keypoints3d), folder)
            return Split3D(load_coco3d(folder / "annotations.json", folder / "images", kps))
        if section.absent:
            return None
        files = getattr(section, section.source)
        return load_split3d(section, Path(files.annotations), Path(files.images), kps)

    train_ds = split("train", recipe.data.train)
    vals = {name: ds for name, section, _ in recipe.val_splits(absent=True) if (ds := split(name, section)) is not None}
    pre = preprocessing_from_recipe(m.input, m.input.size)
    info = get_arch(m.arch)
    head = family.head(recipe)
    points = []
    for step in steps:
        settings = TrainSettings(arch=m.arch, params=info.params(m.params), epochs=10_000, batch_size=t.batch_size,
                                 optimizer=t.optimizer.name, lr=t.optimizer.lr, decay=t.optimizer.decay,
                                 decay_steps=t.optimizer.decay_steps, distribute="none", seed=t.seed,
                                 checkpoint_every=10**9, max_steps=step, family=family.name, head=head)
        result = train(settings, pre, kps, train_ds, None, checkpoint_dir=tmp / "checkpoints", out_dir=tmp / "train",
                       log=lambda line: None)
        import keras

        from mdeploy.models.layers import register_custom_layers

        register_custom_layers()
        model = keras.models.load_model(result.model_path, compile=False)
        scores = {name: family.validate(model, pre, kps, info.output_stride, head, ds) for name, ds in vals.items()}
        point = {"step": step, "images": step * t.batch_size, "seconds": round(time.perf_counter() - T0, 1), "splits": scores}
        print(json.dumps(point), flush=True)
        points.append(point)
    return points


T0 = time.perf_counter()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", type=Path, default=REPO / "recipes" / "lpski_synthetic.yaml")
    ap.add_argument("--steps", default="25,50,100,200")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-build", action="store_true", help="only the curve")
    args = ap.parse_args()
    steps = sorted({int(s) for s in args.steps.split(",")})
    print(f"# MPJPE curve and latency of {args.recipe.name}, {datetime.date.today()}, {machine()}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if not args.no_build:
            env = dict(os.environ, MDEPLOY_CACHE_DIR=str(tmp / "cache"))
            seconds, manifest = build(args.recipe, tmp / "build", env)
            print(f"cold build: {seconds:.1f} s")
            folder = Path(manifest["_dir"])
            splits, rows = _accuracy(folder)
            print("| artifact | size | " + " | ".join(f"{s}: MPJPE mm (change)" for s in splits) + " |")
            tflites = sorted((folder / "tflite").glob("*.tflite"))
            for artifact, row in rows.items():
                print(f"| {artifact} | {row['size']} | " + " | ".join(row["scores"]) + " |")
            if tflites:
                times = interleaved_latency(tflites, args.threads, args.warmup, args.runs)
                print(f"latency, LiteRT XNNPACK, {args.threads} threads, interleaved, {args.runs} rounds after {args.warmup}:")
                print("| variant | size | median | p90 |")
                for path in tflites:
                    t = times[str(path)]
                    print(f"| {path.stem} | {path.stat().st_size / 1e6:.2f} MB | {t['median']:.1f} ms | {t['p90']:.1f} ms |")
        curve(args.recipe, steps, tmp)


def _accuracy(folder: Path) -> tuple[list[str], dict]:
    """(validation splits, artifact -> size and 'MPJPE (drop)' per split) from the build's report.json."""
    report = json.loads((folder / "report" / "report.json").read_text())
    splits = [v["name"] for v in report.get("validation", [])]
    rows: dict = {}
    for art in report.get("artifacts", []):
        by_split = art.get("accuracy_by_split") or {}
        scores = []
        for name in splits:
            acc = by_split.get(name) or {}
            value, drop = acc.get("value"), acc.get("drop")
            scores.append("-" if value is None else f"{value:.1f}" + ("" if drop is None else f" ({drop:+.1f})"))
        if any(s != "-" for s in scores):
            rows[art["id"]] = {"size": f"{art['size'] / 1e6:.2f} MB", "scores": scores}
    return splits, rows


if __name__ == "__main__":
    main()
