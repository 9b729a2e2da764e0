"""Demo apps: `mdeploy scaffold android|ios` and the app step of `mdeploy build`.

An app is rendered from `templates/apps/<platform>/` (the app's own sources: written once,
then the user's) plus the glue of `templates/glue/<platform>/` (regenerated from the
ModelSpec on every run) plus the model the recipe's `app.<platform>.artifact` names,
copied from the build. Paths under `templates/apps` may hold `{{ package_path }}`; a
`.j2` suffix means the file is a template, anything else is copied as it is.

Before any build, an app can still be scaffolded for a recipe that trains a registered
architecture: its interface is fixed by the recipe (`planned_spec`). Then the glue is
complete and the model file is simply not there yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mdeploy.codegen.files import WriteReport, write_files
from mdeploy.codegen.glue import context as glue_context
from mdeploy.codegen.glue import render_glue
from mdeploy.codegen.render import environment, templates_dir
from mdeploy.errors import InputError
from mdeploy.spec import ModelSpec

PLATFORMS = ("android", "ios")
DEFAULT_PROJECT = {"android": "android_demo", "ios": "ios_demo"}
DEFAULT_PACKAGE = "com.mdeploy.pose"
DEFAULT_BUNDLE_ID = "com.mdeploy.PoseDemo"
DEFAULT_NAME = "Pose Demo"
RUNS = {"android": ("tflite",), "ios": ("coreml",)}  # artifact formats each app's glue runs


@dataclass
class AppModel:
    """What one platform's app is generated from."""

    platform: str
    recipe_name: str
    description: str
    spec: ModelSpec
    artifact_id: str
    filename: str  # the artifact's path inside a build folder
    settings: dict  # the recipe's app.<platform> values (with defaults)
    built: Path | None = None  # the artifact in a build folder; None before any build
    details: dict = field(default_factory=dict)  # the artifact's manifest entry (tensor types, ...)
    mace: dict | None = None  # MACE wrapper values when the recipe also exports MACE
    ios_target: str = "16.0"

    @property
    def model_file(self) -> str:
        return Path(self.filename).name


def app_settings(recipe, platform: str) -> dict:
    section = getattr(recipe.app, platform, None) if recipe.app is not None else None
    if section is not None:
        return section.model_dump()
    if platform == "android":
        return {"project": None, "package": DEFAULT_PACKAGE, "artifact": None, "name": DEFAULT_NAME}
    return {"project": None, "artifact": None, "name": DEFAULT_NAME, "bundle_id": DEFAULT_BUNDLE_ID}


def app_target(recipe, platform: str, build_dir: Path):
    """The export target the app runs: `app.<platform>.artifact`, or the best the recipe builds."""
    from mdeploy.exporters import export_targets

    check_platform(platform)
    targets = [t for t in export_targets(recipe, build_dir) if t.format in RUNS[platform]]
    chosen = app_settings(recipe, platform)["artifact"]
    if chosen is None:
        if not targets:
            need = "export.tflite" if platform == "android" else "export.coreml"
            raise InputError(
                f"the recipe builds no artifact the {platform} app can run",
                where=recipe.where("export", key=True),
                hint=f"add {need} to the recipe",
            )
        preference = ["tflite/fp16", "tflite/fp32", "tflite/dynamic", "tflite/int8", "coreml", "coreml/neuralnetwork"]
        return min(targets, key=lambda t: preference.index(t.artifact_id))
    for target in targets:
        if target.artifact_id == chosen:
            return target
    built = ", ".join(t.artifact_id for t in targets) or "none"
    raise InputError(
        f"app.{platform}.artifact is {chosen}, which this recipe does not build (it builds: {built})",
        where=recipe.where("app", platform, "artifact"),
        hint="add it to the recipe's export section, or pick one that is built",
    )


def check_platform(platform: str) -> str:
    if platform not in PLATFORMS:
        raise InputError(f"unknown platform {platform!r}: choose android or ios")
    return platform


def app_model(recipe, platform: str, build_dir: Path | None = None) -> AppModel:
    """The app's model: from the build in `build_dir` when there is one, else as the recipe plans it."""
    from mdeploy.spec import planned_spec

    build_dir = Path(build_dir) if build_dir is not None else None
    target = app_target(recipe, platform, build_dir or Path("build") / recipe.name)
    manifest = _manifest(build_dir)
    entry = _artifact_entry(manifest, target.artifact_id) if manifest else None
    if entry is not None and (build_dir / "model" / "spec.json").is_file():
        spec = ModelSpec.load(build_dir / "model" / "spec.json")
        built = build_dir / entry["path"]
        details = entry
        if not built.exists():
            raise InputError(f"{built} is listed in {build_dir / 'manifest.json'} but missing", hint="run `mdeploy build` again")
    else:
        if target.settings.get("io", "float") != "float":
            raise InputError(
                f"{target.artifact_id} takes {target.settings['io']} input whose scale is known only once it is built",
                where=recipe.where("app", platform, "artifact"),
                hint="run `mdeploy build` on the recipe first, then scaffold from its build",
            )
        spec = planned_spec(recipe)
        built, details = None, {}
    mace_entry = _artifact_entry(manifest, "mace") if manifest else None
    return assemble(recipe, platform, target, spec, details, built, mace_entry)


def assemble(recipe, platform: str, target, spec: ModelSpec, details: dict, built: Path | None = None,
             mace_entry: dict | None = None) -> AppModel:
    """The AppModel of `target` with a known spec (and, once built, the artifact's manifest entry)."""
    mace = None
    if platform == "android" and recipe.export.mace is not None:
        from mdeploy import mace_rules

        # its output tensors are the glue's `outputs`: the exporter names each node after its spec output
        mace = {
            "model_tag": recipe.export.mace.model_tag or mace_rules.tag_for(recipe.name),
            "runtime": recipe.export.mace.runtime,
            "input": (mace_entry or {}).get("details", {}).get("input", spec.input.name),
        }
    ios_target = "16.0"
    if recipe.export.coreml is not None:
        ios_target = recipe.export.coreml.minimum_deployment_target.removeprefix("iOS") + ".0"
    return AppModel(
        platform=platform,
        recipe_name=recipe.name,
        description=recipe.description,
        spec=spec,
        artifact_id=target.artifact_id,
        filename=target.filename,
        settings=app_settings(recipe, platform),
        built=built,
        details=details,
        mace=mace,
        ios_target=ios_target,
    )


def _manifest(build_dir: Path | None) -> dict | None:
    if build_dir is None or not (build_dir / "manifest.json").is_file():
        return None
    from mdeploy.report.manifest import load_manifest

    return load_manifest(build_dir)


def _artifact_entry(manifest: dict, artifact_id: str) -> dict | None:
    for entry in manifest.get("artifacts", []):
        if entry.get("id") == artifact_id:
            return entry
    return None


# ---------------------------------------------------------------------------- rendering


@dataclass
class AppFiles:
    scaffolded: dict[str, str]  # the app's own sources (the user's once written)
    generated: dict[str, str]  # glue (mdeploy's: rewritten from the spec)
    models: dict[str, Path]  # project path -> model file or folder in the build


def template_context(model: AppModel) -> dict:
    settings = model.settings
    package = settings.get("package") if model.platform == "android" else None
    ctx = glue_context(
        model.spec,
        name=model.recipe_name,
        description=model.description,
        package=package,
        model_file=model.model_file,
        artifact=model.details,
        mace=model.mace,
    )
    ctx.update(
        app_name=settings["name"],
        package_path=package.replace(".", "/") if package else None,
        bundle_id=settings.get("bundle_id"),
        ios_target=model.ios_target,
        artifact_id=model.artifact_id,
    )
    return ctx


def glue_dir(model: AppModel) -> str:
    """Where the glue lives inside the app project."""
    if model.platform == "android":
        return "app/src/main/java"  # + the generated package's folders
    return "PoseDemo"


def model_dir(platform: str) -> str:
    return "app/src/main/assets" if platform == "android" else "PoseDemo/Models"


def glue_files(model: AppModel) -> dict[str, str]:
    """Project path -> source of every generated file (without the mdeploy header)."""
    from mdeploy.families import family_of

    ctx = template_context(model)
    files = render_glue(model.platform, ctx)
    files.update(family_of(model.spec).glue_files(model.platform, model.spec, ctx.get("package")))
    return {f"{glue_dir(model)}/{rel}": text for rel, text in files.items()}


def scaffold_files(model: AppModel) -> dict[str, str]:
    """Project path -> text of every file of the app's own sources."""
    env = environment()
    ctx = template_context(model)
    root = templates_dir() / "apps" / model.platform
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        rel = env.from_string(rel).render(**ctx) if "{{" in rel else rel
        if rel.endswith(".j2"):
            out[rel[: -len(".j2")]] = env.get_template(f"apps/{model.platform}/{path.relative_to(root).as_posix()}").render(**ctx)
        else:
            out[rel] = path.read_text(encoding="utf-8")
    return out


def app_files(model: AppModel) -> AppFiles:
    models = {f"{model_dir(model.platform)}/{model.model_file}": model.built} if model.built is not None else {}
    return AppFiles(scaffold_files(model), glue_files(model), models)


def header_source(model: AppModel) -> str:
    return f"recipe {model.recipe_name} ({model.artifact_id})"


@dataclass
class AppUpdate:
    platform: str
    dest: Path
    artifact_id: str
    model: str | None  # project path of the model, None when there is no build yet
    report: WriteReport | None  # None when the app was not updated (see `skipped`)
    skipped: str | None = None

    def to_json(self) -> dict:
        return {
            "platform": self.platform,
            "dest": str(self.dest),
            "artifact": self.artifact_id,
            "model": self.model,
            "skipped": self.skipped,
            **(self.report.to_json() if self.report else {}),
        }


def write_app(model: AppModel, dest: Path, *, force: bool = False, dry_run: bool = False) -> AppUpdate:
    """Create the app in `dest`, or bring it up to date (by the rules of `codegen.files`)."""
    files = app_files(model)
    report = write_files(
        Path(dest),
        files.generated,
        files.scaffolded,
        source=header_source(model),
        force=force,
        models=files.models if model.built is not None else None,
        dry_run=dry_run,
    )
    model_rel = next(iter(files.models), None)
    return AppUpdate(model.platform, Path(dest), model.artifact_id, model_rel, report)


def install_apps(recipe, build_dir: Path, *, blocked: str | None = None) -> list[AppUpdate]:
    """The app step of `mdeploy build`: each app of the recipe gets the built artifact and fresh glue.

    `blocked` (e.g. a failed gate) leaves every app as it is: an app never receives an
    artifact that failed verification.
    """
    out = []
    if recipe.app is None:
        return out
    for platform in PLATFORMS:
        if getattr(recipe.app, platform) is None:
            continue
        dest = Path(app_settings(recipe, platform)["project"])
        if blocked:
            target = app_target(recipe, platform, build_dir)
            out.append(AppUpdate(platform, dest, target.artifact_id, None, None, skipped=blocked))
            continue
        model = app_model(recipe, platform, build_dir)
        if model.built is None:
            out.append(AppUpdate(platform, dest, model.artifact_id, None, None, skipped=f"{model.artifact_id} is not in the build"))
            continue
        out.append(write_app(model, dest))
    return out
