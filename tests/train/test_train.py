"""Training end to end on tiny architectures: build, resume after kill -9, distribution."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from mdeploy.build import build
from mdeploy.recipe import load_recipe
from tests.helpers import REPO, write

TINY = """
name: tiny_train
model:
  arch: tiny_cpm
  input: {size: [64, 64], channels: rgb, range: [-1, 1]}
  keypoints: aic14
data:
  train: {synthetic: {count: 48, seed: 1, size: 64}}
  val: {synthetic: {count: 16, seed: 2, size: 64}}
train: {epochs: 2, batch_size: 8, checkpoint_every: 4}
export:
  tflite: {variants: [fp32]}
verify:
  accuracy: {max_drop: 1.0}
"""


def test_training_recipe_builds_trains_exports_and_scores(tmp_path):
    recipe = load_recipe(write(tmp_path / "r.yaml", TINY))
    result = build(recipe, out_root=tmp_path / "build")
    out = result.build_dir
    statuses = {n: r.status for n, r in result.outcome.records.items()}
    assert statuses == {
        "data/train": "ran", "data/val": "ran", "train": "ran", "model": "ran", "people/model": "ran",
        "tflite/fp32": "ran", "parity/tflite/fp32": "ran", "accuracy/val/model": "ran", "accuracy/val/tflite/fp32": "ran",
    }
    manifest = json.loads((out / "manifest.json").read_text())
    ids = [a["id"] for a in manifest["artifacts"]]
    assert ids == ["train/model", "model", "spec", "model/keras", "tflite/fp32"]
    assert not (out / "data").exists()  # generated data stays in the cache
    training = manifest["training"]
    assert training["steps"] == 12 and training["epochs_run"] == 2 and training["resumed_from"] == 0
    assert [h["epoch"] for h in training["history"]] == [1, 2]
    assert "val_pckh@0.5" in training["history"][0]
    assert (out / "train" / "logs").is_dir() and any((out / "train" / "logs").iterdir())  # TensorBoard events
    spec = json.loads((out / "model" / "spec.json").read_text())
    assert spec["source"]["format"] == "trained" and spec["source"]["arch"] == "tiny_cpm"
    assert spec["output"]["shape"] == [1, 32, 32, 14]
    acc = {g["artifact"]: g for g in manifest["gates"]["accuracy"]["results"]}
    assert acc["model"]["status"] == "measured"
    assert acc["tflite/fp32"]["status"] == "passed"
    assert acc["tflite/fp32"]["metrics"]["samples"] == 16
    assert abs(acc["tflite/fp32"]["metrics"]["drop"]) < 1.0
    assert not (tmp_path / "mdeploy-cache" / "checkpoints").exists() or not any((tmp_path / "mdeploy-cache" / "checkpoints").iterdir())

    again = build(load_recipe(write(tmp_path / "r.yaml", TINY)), out_root=tmp_path / "build")
    assert {r.status for r in again.outcome.records.values()} == {"cached"}
    assert again.written == "unchanged"


def test_early_stop(tmp_path):
    recipe = load_recipe(
        write(tmp_path / "r.yaml", TINY),
        ["train.epochs=5", "train.early_stop={patience: 1, min_delta: 1000}", "export.tflite.variants=[fp32]"],
    )
    result = build(recipe, out_root=tmp_path / "build", only=["train"])
    training = result.manifest["training"]
    assert training["stopped_early"] is True and training["epochs_run"] == 2


def test_kill_during_training_then_resume_from_the_last_checkpoint(tmp_path):
    # 12 epochs of 6 steps: killed at step 8 or soon after, the first run is far from done.
    path = write(tmp_path / "r.yaml", TINY.replace("epochs: 2", "epochs: 12"))
    cmd = [sys.executable, "-m", "mdeploy", "train", str(path), "--out", str(tmp_path / "build")]
    ckpts = tmp_path / "mdeploy-cache" / "checkpoints"
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=dict(os.environ))
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            done = [int(p.name.split("-")[1].split(".")[0]) for p in ckpts.glob("*/ckpt-*.index")] if ckpts.exists() else []
            if done and max(done) >= 8:
                proc.send_signal(signal.SIGKILL)
                break
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.05)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    # What a resumed run restores: the checkpoint the state file names (a kill can land between a
    # checkpoint's files and the state file's update, leaving the previous one current).
    (state,) = ckpts.glob("*/checkpoint")
    saved = int(re.search(r'model_checkpoint_path: "ckpt-(\d+)"', state.read_text()).group(1))

    rerun = subprocess.run(cmd + ["--json"], capture_output=True, text=True, env=dict(os.environ), timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming from step {saved}" in rerun.stderr
    training = json.loads(rerun.stdout)["training"]
    assert training["resumed_from"] == saved and training["steps"] == 72
    assert training["history"][0]["epoch"] == saved // 6 + 1  # the resumed run logs the epochs it ran


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


WORKER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from mdeploy.train.loop import TrainSettings, train
    from mdeploy.data.coco import load_coco
    from mdeploy.keypoints import get_keypoint_set
    from mdeploy.spec import Preprocessing

    data, out = Path(sys.argv[1]), Path(sys.argv[2])
    kps = get_keypoint_set("aic14")
    ds = load_coco(data / "annotations.json", data / "images", kps)
    settings = TrainSettings(arch="tiny_cpm", params={}, epochs=1, batch_size=4, optimizer="adam", lr=1e-3,
                             decay=0.95, decay_steps=1000, distribute="multi_worker", seed=0, checkpoint_every=2)
    result = train(settings, Preprocessing((64, 64), "rgb", (-1, 1)), kps, ds, None,
                   checkpoint_dir=out / "ckpt", out_dir=out / "train", log=lambda line: print(line, file=sys.stderr))
    print(json.dumps({"chief": result.is_chief, "steps": result.steps, "model": str(result.model_path)}))
    """
)


def test_multi_worker_training_on_two_local_processes(tmp_path):
    """MultiWorkerMirroredStrategy for real: two worker processes on 127.0.0.1 train in lockstep."""
    from mdeploy.data.synthetic import SynthConfig, generate

    generate(SynthConfig(32, seed=3, size=64), tmp_path / "data", workers=1)
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER, str(tmp_path / "data"), str(tmp_path / "shared")],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
            )
        )
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    chief, other = results
    assert chief["chief"] is True and other["chief"] is False
    assert chief["steps"] == other["steps"] == 4  # 32 samples / (4 per replica x 2 workers)
    assert Path(chief["model"]).is_file() and other["model"] == "None"
    assert list((tmp_path / "shared" / "ckpt").glob("ckpt-4.index"))
    assert not (tmp_path / "shared" / "ckpt" / "worker-worker-1").exists()


def test_mirrored_strategy_trains(tmp_path):
    recipe = load_recipe(write(tmp_path / "r.yaml", TINY), ["train.distribute=mirrored", "train.epochs=1"])
    result = build(recipe, out_root=tmp_path / "build", only=["train"])
    assert result.manifest["training"]["steps"] == 6


def test_multi_worker_without_tf_config_is_an_environment_error(tmp_path, cli, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    path = write(tmp_path / "r.yaml", TINY)
    result = cli("train", path, "--set", "train.distribute=multi_worker", "--out", tmp_path / "b")
    assert result.exit_code == 3
    assert "train.distribute is multi_worker but TF_CONFIG is not set" in result.stderr
