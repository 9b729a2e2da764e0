"""The code passes the project's lint configuration (pyproject.toml [tool.ruff])."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO


def test_ruff_is_clean():
    ruff = Path(sys.executable).parent / "ruff"  # installed with the dev extra, beside this Python
    proc = subprocess.run([str(ruff), "check", "mdeploy", "tests", "benchmarks"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
