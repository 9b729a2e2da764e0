"""Import an ONNX model (e.g. exported from PyTorch) through onnx2tf, into the canonical form.

onnx2tf turns the ONNX graph (NCHW) into a TensorFlow SavedModel with an NHWC input; that
SavedModel is then imported like any other. onnx2tf pins old TensorFlow, numpy and
protobuf exactly, so it is installed beside mdeploy with --no-deps
(requirements-onnx2tf.txt) and run in a child process, in a scratch folder. Its
self-check loads a file of 20 sample images (128x128, RGB in [0, 1]) that it would
otherwise download: mdeploy writes one there from the package photos and synthetic
figures, so the import never touches the network.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mdeploy.errors import EnvironmentProblem, ModelError
from mdeploy.importers import LoadedModel

SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"
INSTALL = "pip install --no-deps -r requirements-onnx2tf.txt (onnx2tf 1.29.24 and its helpers, beside mdeploy's stack)"


def available() -> bool:
    try:
        return importlib.util.find_spec("onnx2tf") is not None
    except (ModuleNotFoundError, ValueError):
        return False


def sample_images() -> np.ndarray:
    from PIL import Image

    from mdeploy.data.synthetic import render
    from mdeploy.images import PACKAGE_PHOTOS, package_photo

    images = [package_photo(name) for name in PACKAGE_PHOTOS]
    images += [render(1, i, 128)[0] for i in range(20 - len(images))]
    return np.stack([np.asarray(Image.fromarray(i).resize((128, 128), Image.Resampling.BILINEAR), np.float32) / 255.0 for i in images])


def load(section, path: Path, where: Callable[..., str | None]) -> LoadedModel:
    if not available():
        raise EnvironmentProblem("importing ONNX needs onnx2tf, which is not installed", where=where("model", "import", "format"), hint=INSTALL)
    if not path.is_file():
        raise ModelError(f"expected an .onnx file, got a folder: {path}", where=where("model", "import", "path"))
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as err:
        raise ModelError(f"{path.name} is not a valid ONNX model: {str(err).splitlines()[0]}", where=where("model", "import", "path")) from err

    scratch = Path(tempfile.mkdtemp(prefix="mdeploy-onnx2tf-"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    np.save(scratch / SAMPLE_FILE, sample_images())
    out = scratch / "saved_model"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")  # its onnxsim CLI
    proc = subprocess.run(
        [sys.executable, "-m", "onnx2tf", "-i", str(path), "-o", str(out), "-osd", "-coion", "-n"],
        cwd=scratch, env=env, capture_output=True, text=True, timeout=1800,
    )
    if proc.returncode != 0 or not (out / "saved_model.pb").is_file():
        tail = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()][-3:]
        raise ModelError(f"onnx2tf could not convert {path.name}: {' | '.join(tail)[:500]}", where=where("model", "import", "path"))

    from types import SimpleNamespace

    from mdeploy.importers.saved_model import load as load_saved_model

    # onnx2tf writes one serving signature; its tensor names are its own, so take its single in/out.
    loaded = load_saved_model(SimpleNamespace(signature="serving_default", inputs=None, outputs=None), out, where)
    loaded.source = {"format": "onnx", "converter": "onnx2tf", **{k: v for k, v in loaded.source.items() if k != "format"}}
    return loaded
