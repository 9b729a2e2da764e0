"""docs/ci.md's GitHub Actions and GitLab CI examples, run command for command.

The `mdeploy` commands of each example run exactly as written, through bash, in a checkout
layout (recipes/ beside them), with the cache folder the example caches; a second run with
that cache must run no stage. The examples' install step is `pip install .` of this project,
which the test environment already is (asserted, not re-run: a package install is minutes).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO


def _examples() -> dict[str, dict]:
    text = (REPO / "docs" / "ci.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    found = {}
    for block in blocks:
        data = yaml.safe_load(block)
        if isinstance(data, dict) and "jobs" in data:
            found["github"] = data
        elif isinstance(data, dict) and "mdeploy" in data:
            found["gitlab"] = data
    assert set(found) == {"github", "gitlab"}, "docs/ci.md must hold both examples"
    return found


def _commands(kind: str, data: dict) -> list[str]:
    if kind == "github":
        steps = data["jobs"]["build"]["steps"]
        return [s["run"] for s in steps if "run" in s]
    return list(data["mdeploy"]["script"])


@pytest.mark.parametrize("kind", ["github", "gitlab"])
def test_ci_example_runs_as_written(kind, tmp_path):
    data = _examples()[kind]
    commands = _commands(kind, data)
    assert commands[0] == "pip install ."
    assert all(c.startswith("mdeploy ") for c in commands[1:])
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "mdeploy").is_file()  # `pip install .` has been done: this environment is the project installed
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", CI="true", CI_PROJECT_DIR=str(tmp_path), HOME=str(tmp_path))
    env.pop("MDEPLOY_CACHE_DIR", None)
    env.pop("XDG_CACHE_HOME", None)
    for key, value in (data["mdeploy"].get("variables", {}) if kind == "gitlab" else {}).items():
        env[key] = value.replace("$CI_PROJECT_DIR", str(tmp_path))
    cache = Path(env.get("MDEPLOY_CACHE_DIR", tmp_path / ".cache" / "mdeploy"))
    expected_cache = data["jobs"]["build"]["steps"][2]["with"]["path"] if kind == "github" else data["mdeploy"]["cache"]["paths"][0]
    assert Path(expected_cache.replace("~", str(tmp_path)).replace(".mdeploy-cache/", str(tmp_path / ".mdeploy-cache"))).resolve() == cache.resolve()

    for run in (1, 2):
        for command in commands[1:]:
            proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        summary = json.loads((tmp_path / "build-summary.json").read_text())
        assert summary["ok"] is True
        statuses = {s["status"] for s in summary["stages"]}
        if run == 2:
            assert statuses == {"cached"}, "the cached folder must make the second run free"
    assert cache.is_dir() and any(cache.iterdir())
    junit = ET.parse(tmp_path / "mdeploy-junit.xml").getroot()
    assert int(junit.get("tests")) > 5 and junit.get("failures") == "0"
    names = zipfile.ZipFile(tmp_path / "smoke.zip").namelist()
    assert "smoke/manifest.json" in names and "smoke/report/report.html" in names and "smoke/tflite/smoke_fp16.tflite" in names
