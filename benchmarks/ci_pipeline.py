"""The CI pipeline on recipes/smoke.yaml: what it costs and what it leaves.

Cold: `mdeploy build recipes/smoke.yaml --ci --junit J --bundle B` with an empty cache
(what a CI job without a cache restore runs). Cached: the same command again (a CI job
whose cache was restored). Report: `mdeploy report BUILD` regenerating report.html and its
plots from the build. Also the sizes of report.html and the bundle, and which artifacts
differ between two cold builds (the reproducibility claim of docs/ci.md).
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
from pathlib import Path

from common import MDEPLOY, REPO, machine, summary, timed

RUNS = 3


def main() -> None:
    print(f"# CI pipeline (recipes/smoke.yaml), {datetime.date.today()}, {machine()}")
    recipe = REPO / "recipes" / "smoke.yaml"
    cold, cached, report = [], [], []
    shas = []
    for _ in range(RUNS):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            env = dict(os.environ, MDEPLOY_CACHE_DIR=str(tmp / "cache"), CI="true")
            env.pop("XDG_CACHE_HOME", None)
            cmd = MDEPLOY + ["build", str(recipe), "--out", str(tmp / "build"), "--ci",
                             "--junit", str(tmp / "junit.xml"), "--bundle", str(tmp / "smoke.zip")]
            cold.append(timed(cmd, env=env))
            sizes = {"report.html": (tmp / "build/smoke/report/report.html").stat().st_size,
                     "bundle": (tmp / "smoke.zip").stat().st_size}
            manifest = json.loads((tmp / "build/smoke/manifest.json").read_text())
            shas.append({a["id"]: a["sha256"] for a in manifest["artifacts"]})
            cached.append(timed(cmd, env=env))
            report.append(timed(MDEPLOY + ["report", str(tmp / "build/smoke")], env=env))
    print(f"cold CI build: {summary(cold)}")
    print(f"cached CI build: {summary(cached)}")
    print(f"mdeploy report (regenerate): {summary(report)}")
    print(f"report.html {sizes['report.html'] / 1e3:.0f} kB, bundle {sizes['bundle'] / 1e6:.2f} MB")
    differ = sorted(a for a in shas[0] if any(s.get(a) != shas[0][a] for s in shas[1:]))
    print(f"artifacts differing between {RUNS} cold builds: {differ or 'none'} (of {len(shas[0])})")


if __name__ == "__main__":
    main()
