"""Pose prediction on images and videos with any artifact, and skeleton drawing.

A frame goes through the ModelSpec preprocessing, the artifact's runner and the shared
decoder; keypoints come back in the frame's pixels. On video, a moving average over the
last few frames per joint steadies the pose (the demo apps do the same).

A 3-D model's joints can be lifted into camera space (`CameraArgs`: `--focal`,
`--principal`, `--root-depth`): with the camera's focal length and principal point in
pixels of the source image and the root joint's distance from the camera in mm (or the
spec's constant root depth), each joint gains `camera_mm` [X, Y, Z] (x right, y down,
z forward, mm). The options are checked before any model runs: malformed numbers, a focal
length without a principal point (or the reverse), a missing root depth, and a model
whose family has no 3-D decode are each one clear message (exit 2).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mdeploy.errors import InputError
from mdeploy.keypoints import KeypointSet
from mdeploy.spec import ModelSpec

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
LEFT, RIGHT, CENTRE = (40, 120, 255), (255, 60, 40), (60, 220, 90)


def artifact_format(path: Path) -> str:
    """The runner format of an artifact path."""
    path = Path(path)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return "saved_model"
    formats = {".tflite": "tflite", ".keras": "keras", ".onnx": "onnx"}
    if path.suffix in formats and path.is_file():
        return formats[path.suffix]
    if not path.exists():
        raise InputError(f"artifact not found: {path}")
    raise InputError(f"{path} is not a model artifact (.tflite, .keras, .onnx or a SavedModel folder)")


def find_spec(artifact: Path, spec: Path | None = None) -> ModelSpec:
    """The ModelSpec of an artifact: given, or `model/spec.json` of the build it belongs to."""
    if spec is not None:
        if not Path(spec).is_file():
            raise InputError(f"spec not found: {spec}")
        return ModelSpec.load(spec)
    artifact = Path(artifact).absolute()
    for folder in [artifact.parent, *artifact.parents]:
        for candidate in (folder / "model" / "spec.json", folder / "spec.json"):
            if candidate.is_file():
                return ModelSpec.load(candidate)
        if (folder / "manifest.json").is_file():
            break
    raise InputError(
        f"no spec.json found for {artifact}",
        hint="pass --spec build/<name>/model/spec.json (mdeploy writes it next to every build)",
    )


@dataclass(frozen=True)
class CameraArgs:
    """What lifts a 3-D model's joints into camera space: focal length (fx, fy) and principal point
    (cx, cy) in pixels of the source image, and the root joint's depth in mm."""

    focal: tuple[float, float] | None = None
    principal: tuple[float, float] | None = None
    root_depth: float | None = None

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.focal, self.principal, self.root_depth))

    def check_sources(self, sources: list[Path]) -> None:
        """The options shape the keypoints printed for images: with a video they are bad input."""
        if self.given and sources and is_video(sources[0]):
            raise InputError(f"{CAMERA_OPTIONS} apply to the keypoints printed for images; a video result holds none",
                             hint="predict the frames as images to get camera-space joints")

    def keywords(self) -> dict:
        """The family's `joint_extras` keywords (nothing when no option was given)."""
        if not self.given:
            return {}
        return {"focal": self.focal, "principal": self.principal, "root_depth": self.root_depth}


CAMERA_OPTIONS = "--focal, --principal and --root-depth"


def _numbers(text: str | None, option: str, metavar: str, counts: tuple[int, ...]) -> tuple[float, ...] | None:
    if text is None:
        return None
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) not in counts or not all(np.isfinite(values)):
        raise InputError(f"{option} expects {metavar} (numbers separated by a comma, no spaces needed), got {text!r}")
    return values


def parse_camera(focal: str | None = None, principal: str | None = None, root_depth: str | None = None) -> CameraArgs:
    """The `predict` camera options as numbers, or an InputError naming the option that is wrong."""
    f = _numbers(focal, "--focal", "FX,FY (or one F for both) in pixels", (1, 2))
    c = _numbers(principal, "--principal", "CX,CY in pixels", (2,))
    r = _numbers(root_depth, "--root-depth", "MM, the root joint's distance from the camera in mm", (1,))
    if f is not None:
        f = (f[0], f[0]) if len(f) == 1 else f
        if min(f) <= 0:
            raise InputError(f"--focal must be positive pixels, got {focal!r}")
    if r is not None and r[0] <= 0:
        raise InputError(f"--root-depth must be a positive distance in mm (the root joint lies in front of the camera), got {root_depth!r}")
    if (f is None) != (c is None):
        given, missing = ("--focal", "--principal CX,CY") if c is None else ("--principal", "--focal FX,FY")
        raise InputError(f"{given} needs {missing} too: camera-space joints need the focal length and the principal point",
                         hint="both in pixels of the source image (the phone's camera API or a calibration gives them)")
    return CameraArgs(f, c, None if r is None else r[0])


def check_camera(spec: ModelSpec, camera: CameraArgs, artifact: Path | str = "the artifact") -> None:
    """Whether `camera` can be applied to the model of `spec`: its family must decode 3-D joints, and
    back-projection needs a root depth (given, or the spec's constant)."""
    from mdeploy.families import family_of

    if not camera.given:
        return
    family = family_of(spec)
    if not family.camera_space:
        raise InputError(
            f"{CAMERA_OPTIONS} lift a 3-D model's joints into camera space; {artifact} is a {family.description} model "
            f"(family {family.name}) with 2-D keypoints only",
            hint="leave the options out, or predict with a volumetric (3-D) artifact",
        )
    runtime = (spec.head or {}).get("runtime", {}).get("root_depth", {})
    constant = runtime.get("source") == "constant" and runtime.get("mm") is not None
    if camera.focal is not None and camera.root_depth is None and not constant:
        raise InputError(
            "camera-space joints need --root-depth MM as well: the volume gives each joint's depth relative to the "
            "root joint, not its distance from the camera",
            hint="pass the root joint's depth in mm (ground truth, or a root-depth estimate such as RootNet's), "
                 "or leave out --focal and --principal for root-relative joints",
        )


@dataclass
class Predictor:
    spec: ModelSpec
    runner: Callable[[np.ndarray], np.ndarray]
    camera: CameraArgs = CameraArgs()

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """RGB uint8 frame -> [K, 3] (x, y, confidence) in the frame's pixels (a multi-person
        model: its first person, or nobody's points at confidence -1)."""
        people = self.people(rgb)
        return people[0] if people else np.full((len(self.spec.keypoints), 3), -1.0, np.float32)

    def people(self, rgb: np.ndarray) -> list[np.ndarray]:
        """RGB uint8 frame -> every person found, each [K, 3] (x, y, confidence) in the frame's
        pixels; a part its family did not find has confidence -1."""
        return self.predict(rgb)[0]

    def predict(self, rgb: np.ndarray) -> tuple[list[np.ndarray], list[list[dict]] | None]:
        """(`people`, per person and joint what the family adds to the JSON, e.g. depth in mm)."""
        from mdeploy.families import family_of, run_outputs

        family = family_of(self.spec)
        x, affine = self.spec.preprocessing.apply(rgb)
        outputs = run_outputs(self.runner, x[None])
        return family.detect(outputs, self.spec, affine), family.joint_extras(outputs, self.spec, affine, **self.camera.keywords())

    @property
    def multi_person(self) -> bool:
        from mdeploy.families import family_of

        return family_of(self.spec).multi_person

    @property
    def threshold(self) -> float:
        """Confidence from which a keypoint is drawn."""
        from mdeploy.families import family_of

        return family_of(self.spec).draw_threshold(self.spec)

    def draw(self, rgb: np.ndarray, people: list[np.ndarray] | None = None) -> np.ndarray:
        """The frame with every person's skeleton drawn."""
        for points in self.people(rgb) if people is None else people:
            rgb = draw_pose(rgb, points, self.spec.keypoints, self.threshold)
        return rgb


def open_predictor(artifact: Path, spec: Path | None = None, camera: CameraArgs | None = None) -> Predictor:
    """The artifact's predictor; `camera` is checked against its spec before the model is opened."""
    model_spec = find_spec(artifact, spec)
    camera = camera or CameraArgs()
    check_camera(model_spec, camera, artifact)
    return Predictor(model_spec, open_artifact(artifact), camera)


def open_artifact(path: Path):
    """The runner of an artifact the user names; a file its runtime cannot read is bad input (ModelError)."""
    from mdeploy.errors import MdeployError, ModelError, environment_problem
    from mdeploy.runners import open_runner

    fmt = artifact_format(path)
    try:
        return open_runner(fmt, path)
    except MdeployError:
        raise
    except Exception as err:  # the runtime's parser refused the file: garbage, truncated, another format
        if environment_problem(err) is not None:
            raise
        raise ModelError(
            f"{path} cannot be read as {_FORMAT_NAMES.get(fmt, fmt)}: {_one_line(err)}",
            hint="check that the file is complete and is the format its name says",
        ) from err


_FORMAT_NAMES = {"saved_model": "a SavedModel", "tflite": "a TFLite model", "keras": "a Keras model", "onnx": "an ONNX model"}


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return f"{type(err).__name__}: {text[:300]}"


class Smoother:
    """Per-joint moving average over the last `window` frames (confidence averaged too)."""

    def __init__(self, window: int = 3):
        self.history: deque = deque(maxlen=window)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        self.history.append(points)
        return np.mean(np.stack(self.history), axis=0)


def draw_pose(rgb: np.ndarray, points: np.ndarray, keypoints: KeypointSet, threshold: float) -> np.ndarray:
    """The frame with the skeleton drawn: bones where both ends pass the threshold, joints coloured by side."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(np.ascontiguousarray(rgb))
    draw = ImageDraw.Draw(img)
    width = max(2, int(round(min(img.size) / 120)))

    def colour(i: int):
        name = keypoints.names[i]
        return LEFT if name.startswith("left") else RIGHT if name.startswith("right") else CENTRE

    for a, b in keypoints.skeleton:
        if points[a, 2] >= threshold and points[b, 2] >= threshold:
            c = colour(b) if colour(a) == CENTRE else colour(a)
            draw.line([tuple(points[a, :2]), tuple(points[b, :2])], fill=c, width=width)
    r = width * 1.5
    for i, (x, y, conf) in enumerate(points):
        if conf >= threshold:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour(i), outline=(255, 255, 255))
    return np.asarray(img)


def is_video(path: Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
POSE_SUFFIX = "_pose"  # what `mdeploy predict` appends to a source's stem


def expand_sources(args: list[Path]) -> list[Path]:
    """The files `mdeploy predict` reads: each argument a file, a folder (the images directly in
    it) or a glob pattern (for a shell that did not expand it). A folder or pattern leaves out
    hidden files and earlier results (`*_pose.*`), so running twice does not draw on a drawing."""
    import glob

    def listed(paths) -> list[Path]:
        return sorted(p for p in paths if p.is_file() and not p.name.startswith(".") and not p.stem.endswith(POSE_SUFFIX)
                      and p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES)

    out: list[Path] = []
    for arg in args:
        if arg.is_dir():
            found = [p for p in listed(arg.iterdir()) if not is_video(p)]
            if not found:
                raise InputError(f"{arg} is a folder with no images in it ({', '.join(IMAGE_SUFFIXES)})")
        elif arg.exists():
            if not arg.is_file():
                raise InputError(f"input {arg} is not a file")
            found = [arg]
        elif any(c in str(arg) for c in "*?["):
            found = listed(Path(p) for p in glob.glob(str(arg)))
            if not found:
                raise InputError(f"no image or video matches {arg}")
        else:
            raise InputError(f"input not found: {arg}")
        out += [p for p in found if p not in out]
    videos = [p for p in out if is_video(p)]
    if videos and len(out) > 1:
        raise InputError(f"{videos[0]}: a video is predicted on its own; give one video at a time")
    return out


def result_paths(sources: list[Path], out: Path | None) -> list[Path]:
    """Where each result goes: beside its source by default (<stem>_pose.png, or .mp4 for a video),
    into --out when it is a folder (or several sources are given), else the file --out names."""
    def name(src: Path) -> str:
        return f"{src.stem}{POSE_SUFFIX}{'.mp4' if is_video(src) else '.png'}"

    if out is None:
        return [src.with_name(name(src)) for src in sources]
    if not out.is_dir() and len(sources) == 1:
        return [out]
    targets = [out / name(src) for src in sources]
    seen: dict[Path, Path] = {}
    for src, target in zip(sources, targets):
        if target in seen:
            raise InputError(f"{seen[target]} and {src} would both be written to {target}",
                             hint="predict them into different --out folders, or leave --out out to write each beside its source")
        seen[target] = src
    return targets


def read_video(path: Path) -> tuple[Iterator[np.ndarray], float]:
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise InputError(f"cannot read video {path}: {err}") from err
    stream = container.streams.video[0]
    try:  # every frame is decoded at this size: the same pixel budget as images
        from mdeploy.limits import check_pixels

        check_pixels(stream.codec_context.width, stream.codec_context.height, f"video {path}")
    except InputError:
        container.close()
        raise
    rate = float(stream.average_rate or 25)

    def frames():
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
        finally:
            container.close()

    return frames(), rate


def predict_video(predictor: Predictor, source: Path, out: Path, window: int = 3, progress=None) -> int:
    """Annotate every frame of `source` into `out` (H.264 mp4); returns the frame count."""
    import av

    frames, rate = read_video(source)
    smoother = Smoother(window)
    tmp = out.with_name(f".{out.name}.part{out.suffix}")
    count = 0
    container = av.open(str(tmp), mode="w")
    try:
        stream = None
        for rgb in frames:
            if stream is None:
                stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=round(rate))
                stream.width, stream.height = rgb.shape[1] // 2 * 2, rgb.shape[0] // 2 * 2
                stream.pix_fmt = "yuv420p"
            if predictor.multi_person:  # people are not tracked across frames: each frame drawn as found
                drawn = predictor.draw(rgb)
            else:
                drawn = predictor.draw(rgb, [smoother(predictor(rgb))])
            frame = av.VideoFrame.from_ndarray(drawn[: stream.height, : stream.width], format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
            count += 1
            if progress:
                progress(count)
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    finally:
        container.close()
    if count == 0:
        tmp.unlink(missing_ok=True)
        raise InputError(f"{source} has no video frames")
    tmp.replace(out)
    return count
