"""The report tests share one tiny build (about 25 s on two cores): built once per session,
and one way of opening a report in the browser (`open_report`)."""

from __future__ import annotations

import shutil

import pytest

from tests.helpers import write

HOSTILE = 'Pose <b>bold</b> & <script>alert("x")</script> "quoted"'


@pytest.fixture(scope="session")
def report_build(tmp_path_factory):
    """A tiny trained model with a validation split, every format, host benchmarks, its report."""
    from mdeploy.build import build
    from mdeploy.pipeline import Cache
    from mdeploy.recipe import load_recipe

    folder = tmp_path_factory.mktemp("report")
    recipe = write(folder / "rep.yaml", f"""
        name: rep
        description: '{HOSTILE}'
        model:
          arch: tiny_cpm
          input: {{size: [64, 64], channels: rgb, range: [-1, 1]}}
          keypoints: aic14
          decode: {{threshold: 0.05}}
        data:
          train: {{synthetic: {{count: 64, seed: 1, size: 64}}}}
          val: {{synthetic: {{count: 8, seed: 2, size: 64}}}}
        train: {{epochs: 2, batch_size: 8, optimizer: {{name: adam, lr: 4.0e-3}}, foreground_weight: 10}}
        export:
          tflite: {{variants: [fp32, fp16]}}
          onnx: {{opset: 17}}
          coreml: {{precision: fp16}}
        verify: {{accuracy: {{max_drop: 50}}}}
        bench: {{runs: 4, warmup: 1, trials: 2, threads: [1, 2], artifacts: [tflite/fp32, tflite/fp16]}}
        """)
    result = build(load_recipe(recipe), out_root=folder / "build", cache=Cache(folder / "cache"))
    assert not result.failed_gates and result.report == "written"
    return recipe, result.build_dir


def launch(playwright):
    """Debian's Chromium, headless, driven by Playwright."""
    return playwright.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])


def open_report(browser, html, width: int, problems: list, height: int = 900):
    """A page showing `html` offline at `width`: only file: and data: URLs load, and every console
    message and page error is appended to `problems` (a report must give none)."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.on("console", lambda m: problems.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.route("**/*", lambda route: route.abort() if not route.request.url.startswith(("file:", "data:")) else route.continue_())
    page.goto(html.as_uri())
    page.wait_for_load_state("load")
    return page
