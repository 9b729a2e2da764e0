"""kill -9 in the middle of a stage leaves the previous build untouched; the next build completes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from mdeploy.build import build
from mdeploy.fsutil import iter_files, sha256_file
from mdeploy.recipe import load_recipe
from tests.helpers import tiny_recipe


def snapshot(folder):
    return {f.relative_to(folder).as_posix(): sha256_file(f) for f in iter_files(folder)}


def test_kill_during_a_stage_keeps_the_previous_build(tmp_path, tiny_models):
    path = tiny_recipe(tmp_path, tiny_models)
    out = tmp_path / "build"
    build(load_recipe(path), out_root=out)
    before = snapshot(out / "tiny")

    proc = subprocess.Popen(
        [sys.executable, "-m", "mdeploy", "build", str(path), "--out", str(out), "--no-cache",
         "--set", "export.tflite.variants=[fp32, fp16]"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ),
    )
    seen = []
    deadline = time.monotonic() + 120
    try:
        for line in proc.stderr:
            seen.append(line)
            # The model stage imports TensorFlow and writes a SavedModel: seconds of work.
            if line.startswith("[1/") and "] model: import keras" in line:
                proc.send_signal(signal.SIGKILL)
                break
            assert time.monotonic() < deadline, seen
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, seen

    assert snapshot(out / "tiny") == before  # artifacts and manifest byte for byte
    assert sorted(p.name for p in out.iterdir()) == [".tiny.lock", "tiny"]  # the killed build's lock file
    killed_staging = list((tmp_path / "mdeploy-cache" / "tmp").iterdir())
    assert [p.name.split("-")[0] for p in killed_staging] == [str(proc.pid)]

    result = build(load_recipe(path, ["export.tflite.variants=[fp32, fp16]"]), out_root=out)
    assert [g.status for g in result.gates if g.gate == "parity"] == ["passed", "passed"]
    manifest = json.loads((out / "tiny" / "manifest.json").read_text())
    assert {a["id"] for a in manifest["artifacts"]} == {"model", "spec", "tflite/fp32", "tflite/fp16"}
    assert not (tmp_path / "mdeploy-cache" / "tmp" / killed_staging[0].name).exists()
    assert sorted(p.name for p in out.iterdir()) == ["tiny"]  # its flock died with it: taken, then removed
