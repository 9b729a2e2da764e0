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
        [sys.executable, "-m", "mdeploy", "init", "from_wheel", "--import", str(model), "--channels", "rgb", "--range", "0,1",
         "--dest", str(tmp_path)],  # with the contract given, init need not read the (empty) model
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )
    assert init.returncode == 0, init.stderr
    assert "name: from_wheel" in (tmp_path / "from_wheel.yaml").read_text()
    assert "mdeploy/templates/apps/android/.gitignore" in names
    assert "mdeploy/templates/apps/android/app/src/main/java/{{ package_path }}/MainActivity.kt.j2" in names

    # Scaffold the Android demo from the unpacked wheel: the same files as the committed demo app.
    scaffold = subprocess.run(
        [sys.executable, "-m", "mdeploy", "scaffold", "android", "--recipe", str(REPO / "recipes" / "cpm_android.yaml"),
         "--dest", str(tmp_path / "app"), "--out", str(tmp_path / "build")],
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )
    assert scaffold.returncode == 0, scaffold.stderr
    demo = REPO / "android_demo"
    committed = {p.relative_to(demo) for p in demo.rglob("*") if p.is_file() and "assets" not in p.parts and p.name != "models.json"}
    written = {p.relative_to(tmp_path / "app") for p in (tmp_path / "app").rglob("*") if p.is_file()}
    assert written == committed
