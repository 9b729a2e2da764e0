"""Cold build and fully cached rebuild of a small recipe and of the PEFM import recipe.

Cold: empty cache and build folder (each stage runs, in a fresh process). Cached: the
same command again (every stage cached; target under 3 s). Each run is a separate
`mdeploy build` process, as a user would run it.
"""

from __future__ import annotations

import datetime
import os
import sys
import tempfile
from pathlib import Path

from common import MDEPLOY, REPO, machine, summary, timed

sys.path.insert(0, str(REPO))
RUNS = 3


def bench(recipe: Path, label: str, extra: list[str]) -> None:
    cold, cached = [], []
    for _ in range(RUNS):
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ, MDEPLOY_CACHE_DIR=str(Path(tmp) / "cache"))
            cmd = MDEPLOY + ["build", str(recipe), "--out", str(Path(tmp) / "build"), *extra]
            cold.append(timed(cmd, env=env))
            cached.append(timed(cmd, env=env))
    print(f"{label} cold build: {summary(cold)}")
    print(f"{label} cached rebuild: {summary(cached)}")


def main() -> None:
    from tests.helpers import save_all_formats, tiny_recipe

    print(f"# build times, {datetime.date.today()}, {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        models = save_all_formats(Path(tmp) / "models")
        small = tiny_recipe(Path(tmp), models, "keras", extra="export: {tflite: {variants: [fp32, fp16]}}\n")
        bench(small, "small recipe (tiny Keras model, fp32+fp16)", [])
    pefm = REPO / "recipes" / "pefm_cpm.yaml"
    if (REPO.parent / "shared" / "reference" / "pefm" / "cpm_model" / "model.pb").is_file():
        bench(pefm, "PEFM CPM import (frozen .pb, fp32+fp16)", [])
    else:
        print("PEFM recipe skipped: ../shared is absent")


if __name__ == "__main__":
    main()
