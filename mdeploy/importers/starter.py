"""`mdeploy init`: read a model to import, propose its tensors, probe its preprocessing.

What a starter recipe gets: the model's inputs and candidate outputs
(importers/interface.py), the pair proposed or the names given (checked against the model),
the keypoint set its output channels match, and, unless the user gave channels and range,
the preprocessing the probe found best (importers/probe.py). The command only prints it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mdeploy.errors import MdeployError, ModelError
from mdeploy.importers.interface import Choice, ModelInterface, choose, read_interface
from mdeploy.importers.probe import Score

NAMED_FORMATS = ("frozen_pb", "tflite")  # formats whose recipes always name their tensors


@dataclass
class Starter:
    """What `init` writes, and what it found on the way."""

    channels: str
    range: tuple[float, float]
    keypoints: str
    inputs: list[str] = field(default_factory=list)  # names written into the recipe
    outputs: list[str] = field(default_factory=list)
    interface: ModelInterface | None = None  # None: the model was not read
    choice: Choice | None = None
    scores: list[Score] | None = None  # best first; None: not probed
    photos: list[str] = field(default_factory=list)
    threshold: float = 0.2

    def note(self) -> list[str]:
        """YAML comment lines above the preprocessing contract."""
        from mdeploy.importers.probe import recipe_note

        return recipe_note(self.scores, len(self.photos), self.threshold) if self.scores else []

    def to_json(self) -> dict:
        out: dict = {"channels": self.channels, "range": list(self.range), "keypoints": self.keypoints,
                     "inputs": self.inputs, "outputs": self.outputs}
        if self.interface is not None:
            iface, picked = self.interface, self.choice
            out["model"] = {"path": str(iface.path), "format": iface.format, **iface.facts}
            out["inputs_found"] = [t.to_json() for t in iface.inputs]
            out["outputs_found"] = [t.to_json() for t in iface.outputs]
            out["chosen"] = {"input": picked.input.name, "input_given": picked.input_given, "output": picked.output.name,
                             "output_given": picked.output_given, "stride": picked.heatmaps.stride if picked.heatmaps else None}
        if self.scores is not None:
            out["probe"] = {"photos": self.photos, "threshold": self.threshold, "scores": [s.to_json() for s in self.scores]}
        return out


def inspect_model(fmt: str, path: Path, input_name: str | None, output_name: str | None, channels: str | None,
                  value_range: tuple[float, float] | None, keypoints: str | None, size: tuple[int, int] | None,
                  probe_images: Sequence[Path] = ()) -> Starter:
    """Read the model when a name must be found or checked or the preprocessing probed; what to write."""
    from mdeploy.limits import check_input_path

    check_input_path(path, "--import")  # a FIFO or a device is refused before anything reads it
    probing = channels is None or value_range is None
    found = Starter(channels or "rgb", value_range or (0.0, 1.0), keypoints or "aic14")
    if not (fmt in NAMED_FORMATS or probing or input_name or output_name):
        return found  # a Keras file or SavedModel with the contract given: nothing to read
    iface = read_interface(path, fmt, inputs=[input_name] if input_name else None,
                           outputs=[output_name] if output_name else None, size=size)
    picked = choose(iface, input_name, output_name, keypoints, size)
    found.interface, found.choice = iface, picked
    if keypoints is None and picked.heatmaps:
        found.keypoints = picked.heatmaps.keypoints
    # A graph's names are always written; a Keras file's or SavedModel's only when the user gave them.
    found.inputs = [picked.input.name] if fmt in NAMED_FORMATS or input_name else []
    found.outputs = [picked.output.name] if fmt in NAMED_FORMATS or output_name else []
    if probing:
        _probe(found, channels, value_range, probe_images)
    return found


def _probe(found: Starter, channels: str | None, value_range: tuple[float, float] | None, probe_images: Sequence[Path]) -> None:
    from mdeploy.importers.probe import probe, probe_photos, settings
    from mdeploy.spec import DecodeSettings

    picked = found.choice
    if picked.size is None:
        raise ModelError(
            f"the input {picked.input.name} {picked.input.shape_text()} accepts any size, so the preprocessing probe has none to run at",
            hint="pass --size HEIGHT,WIDTH (the size to deploy), or give --channels and --range",
        )
    found.threshold = DecodeSettings().threshold
    photos = probe_photos(probe_images)
    run = found.interface.open_run(picked.input.name, picked.output.name)
    try:
        found.scores = probe(run, picked.size, photos, settings(channels, value_range), found.threshold)
    except MdeployError:
        raise
    except Exception as err:  # TensorFlow and LiteRT raise many types for a model that cannot run
        text = str(err).strip().splitlines()
        raise ModelError(
            f"the model cannot run from {picked.input.name} to {picked.output.name} on a [1, {picked.size[0]}, {picked.size[1]}, 3] "
            f"input: {text[0] if text else type(err).__name__}",
            hint="check --input/--output, or give --channels and --range to skip the probe",
        ) from err
    found.photos = [name for name, _ in photos]
    found.channels, found.range = found.scores[0].channels, found.scores[0].range
