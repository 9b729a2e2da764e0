"""Wall time of `mdeploy --help`, `validate` and `schema` (target: --help under 0.5 s)."""

from __future__ import annotations

import datetime
import tempfile
from pathlib import Path

from common import MDEPLOY, REPO, machine, summary, timed

RUNS = 15


def main() -> None:
    print(f"# CLI start-up, {datetime.date.today()}, {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        recipe = REPO / "recipes" / "pefm_cpm.yaml"
        for args in (["--help"], ["validate", str(recipe)], ["schema"]):
            timed(MDEPLOY + args, cwd=Path(tmp))  # warm the file cache
            samples = [timed(MDEPLOY + args, cwd=Path(tmp)) for _ in range(RUNS)]
            print(f"mdeploy {' '.join(a if not a.endswith('.yaml') else Path(a).name for a in args)}: {summary(samples)}")


if __name__ == "__main__":
    main()
