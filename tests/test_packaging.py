"""The wheel carries the templates and works from an install, not only from a checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

from tests.helpers import REPO


def test_wheel_includes_templates_and_renders_from_them(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"), str(REPO)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("mdeploy-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "site")
    assert "mdeploy/templates/recipes/import.yaml.j2" in names
    assert "mdeploy/cli/__init__.py" in names
    assert not any(n.startswith("tests/") for n in names)

    # Run `mdeploy init` from the unpacked wheel (it comes first on the path).
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
    model = tmp_path / "m.keras"
    model.write_bytes(b"")
    run = subprocess.run(
        [sys.executable, "-c", "import mdeploy.codegen.render as r; print(r.templates_dir())"],
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )
    assert run.stdout.strip() == str(tmp_path / "site" / "mdeploy" / "templates")
    init = subprocess.run(
        [sys.executable, "-m", "mdeploy", "init", "from_wheel", "--import", str(model), "--dest", str(tmp_path)],
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )
    assert init.returncode == 0, init.stderr
    assert "name: from_wheel" in (tmp_path / "from_wheel.yaml").read_text()
