"""The training loop: multi-stage L2 loss, Adam with exponential decay, checkpoints, resume.

A custom loop over `tf.distribute` (one code path for one device, several GPUs and
several machines). Every supervised stage output is compared with the same Gaussian
targets (per image: half the summed squared error, summed over stages; averaged over
the global batch). The optimizer state, the model and the step live in one
`tf.train.Checkpoint` written every `checkpoint_every` steps; a rerun restores it and,
because the input stream is a pure function of (seed, position), continues with exactly
the batches an uninterrupted run would have seen. At each epoch end the model is scored
on the validation split (PCKh) for the log, TensorBoard and early stopping.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mdeploy.data.coco import Dataset
from mdeploy.data.pipeline import Augment
from mdeploy.errors import InputError
from mdeploy.evaluate.metrics import LABELS, LOWER_IS_BETTER, unit
from mdeploy.keypoints import KeypointSet
from mdeploy.spec import ModelSpec, Preprocessing


@dataclass(frozen=True)
class TrainSettings:
    arch: str
    params: dict
    epochs: int
    batch_size: int  # per replica
    optimizer: str
    lr: float
    decay: float
    decay_steps: int
    distribute: str
    seed: int
    checkpoint_every: int
    patience: int | None = None
    min_delta: float = 0.0
    max_steps: int | None = None  # stop early after this many steps (smoke runs)
    foreground_weight: float = 1.0  # L2 weight 1 + (w - 1) * target: heatmap pixels count w times
    init_from: Path | None = None  # a release's frozen graph whose weights start the model
    freeze_batchnorm: bool = False  # batch norm layers keep their statistics (fine-tuning)
    init_output: str | None = None
    family: str = "heatmap"  # the model family that makes the targets, the loss and the validation score
    head: dict = field(default_factory=dict)  # the family's settings (spec head), e.g. a PAF layout


@dataclass
class TrainResult:
    model_path: Path | None  # written by the chief only
    steps: int
    epochs_run: int
    resumed_from: int
    stopped_early: bool
    images_per_second: float
    history: list[dict] = field(default_factory=list)
    is_chief: bool = True

    def to_json(self) -> dict:
        return {
            "steps": self.steps,
            "epochs_run": self.epochs_run,
            "resumed_from": self.resumed_from,
            "stopped_early": self.stopped_early,
            "images_per_second": round(self.images_per_second, 2),
            "history": self.history,
        }


def train(
    settings: TrainSettings,
    pre: Preprocessing,
    keypoints: KeypointSet,
    train_ds: Dataset,
    val_ds: Dataset | None,
    *,
    checkpoint_dir: Path,
    out_dir: Path,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> TrainResult:
    """Train `settings.arch`; the chief writes `out_dir/model.keras`, history and TensorBoard logs."""
    from mdeploy.train.distribute import make_strategy

    log(f"starting TensorFlow, building {settings.arch} and the input pipeline ...")  # seconds of silence otherwise
    worker = make_strategy(settings.distribute)  # first: collective ops need a fresh runtime
    import keras
    import tensorflow as tf

    from mdeploy.families import get_family
    from mdeploy.models import create_model, get_arch

    info = get_arch(settings.arch)
    family = get_family(settings.family)
    stride = info.output_stride
    global_batch = settings.batch_size * worker.replicas
    examples = family.train_examples(train_ds)
    steps_per_epoch = examples // global_batch
    if steps_per_epoch == 0:
        raise InputError(
            f"the training split has {examples} {'images' if family.multi_person else 'samples'}, "
            f"fewer than one batch of {global_batch}",
            hint="generate more data or lower train.batch_size",
        )
    total_steps = settings.epochs * steps_per_epoch
    if settings.max_steps:
        total_steps = min(total_steps, settings.max_steps)

    keras.utils.set_random_seed(settings.seed)
    with worker.strategy.scope():
        model = create_model(settings.arch, settings.params, pre.size, len(keypoints))
        if settings.init_from is not None:  # a resumed run's checkpoint (restored below) overrides these
            from mdeploy.models.release_weights import load_release_weights

            report = load_release_weights(model, settings.init_from, output=settings.init_output)
            log(f"started from {Path(settings.init_from).name}: {report['tensors']} tensors into {report['layers']} layers")
        if settings.freeze_batchnorm:  # Keras runs a non-trainable BatchNormalization in inference mode
            for layer in model.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False
        schedule = keras.optimizers.schedules.ExponentialDecay(
            settings.lr, settings.decay_steps, settings.decay, staircase=True
        )
        if settings.optimizer == "adam":
            optimizer = keras.optimizers.Adam(learning_rate=schedule)
        else:
            optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=0.9)
        optimizer.build(model.trainable_variables)
        step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step_var)

    ckpt_dir = Path(checkpoint_dir) if worker.is_chief else Path(checkpoint_dir) / f"worker-{worker.task.replace(' ', '-')}"
    manager = tf.train.CheckpointManager(checkpoint, str(ckpt_dir), max_to_keep=2)
    start = 0
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).expect_partial()
        start = int(step_var.numpy())
        log(f"resuming from step {start} ({manager.latest_checkpoint})")

    dataset = family.train_dataset(
        train_ds, pre, keypoints, stride, settings.head,
        batch_size=global_batch, seed=settings.seed, epochs=settings.epochs,
        augment=Augment(), shuffle=True, start_batch=start,
    )
    iterator = iter(worker.strategy.experimental_distribute_dataset(dataset))

    def step_fn(images, targets):
        with tf.GradientTape() as tape:
            outputs = model(images, training=True)
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            per_image = family.train_loss(list(outputs), targets, settings)
            loss = tf.nn.compute_average_loss(per_image, global_batch_size=global_batch)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    @tf.function
    def train_step(it):
        images, targets = next(it)
        per_replica = worker.strategy.run(step_fn, args=(images, targets))
        return worker.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    out_dir = Path(out_dir)
    writer = tf.summary.create_file_writer(str(out_dir / "logs")) if worker.is_chief else tf.summary.create_noop_writer()
    history: list[dict] = []
    best, bad_epochs, stopped = -math.inf, 0, False
    losses: list[float] = []
    report_every = max(1, min(50, steps_per_epoch // 4))
    t0 = time.perf_counter()
    window_start, window_steps = t0, 0
    step = start
    first_step_done = None  # throughput excludes the first step (it traces the graph)
    clock = _EtaClock()
    log("first step: tracing the training graph ...")  # seconds with no step to show
    while step < total_steps:
        loss = float(train_step(iterator))
        step += 1
        if first_step_done is None:
            first_step_done = time.perf_counter()
            window_start, window_steps = first_step_done, -1  # the tracing step is not throughput
            clock.start(first_step_done)
        step_var.assign(step)
        losses.append(loss)
        window_steps += 1
        if step % settings.checkpoint_every == 0:
            manager.save(checkpoint_number=step)
        epoch_end = step % steps_per_epoch == 0 or step == total_steps
        if step % report_every == 0 or epoch_end:
            now = time.perf_counter()
            ips = window_steps * global_batch / (now - window_start) if window_steps > 0 and now > window_start else None
            window_start, window_steps = now, 0
            lr = float(schedule(step))
            epoch = (step - 1) // steps_per_epoch + 1
            # This epoch's validation (at its end, after this line) and those of the epochs to come.
            validations_left = (total_steps - 1) // steps_per_epoch + 2 - epoch if val_ds is not None and worker.is_chief else 0
            eta = clock.eta(now, step - start - 1, total_steps - step, validations_left)
            log(
                f"epoch {epoch}/{settings.epochs} step {step}/{total_steps} loss {np.mean(losses[-report_every:]):.3f} "
                f"lr {lr:.2e} " + ("" if ips is None else f"{ips:.1f} img/s ") + f"eta {eta}"
            )
            with writer.as_default():
                tf.summary.scalar("loss", float(np.mean(losses[-report_every:])), step=step)
                tf.summary.scalar("learning_rate", lr, step=step)
                if ips is not None:  # a window of only the tracing step measures no throughput
                    tf.summary.scalar("images_per_second", ips, step=step)
        if epoch_end:
            epoch = (step - 1) // steps_per_epoch + 1
            record = {"epoch": epoch, "step": step, "loss": round(float(np.mean(losses[-steps_per_epoch:])), 5)}
            if val_ds is not None and worker.is_chief:
                validation_start = time.perf_counter()
                score = family.validate(model, pre, keypoints, stride, settings.head, val_ds)
                clock.validated(time.perf_counter() - validation_start)
                record.update(score)
                primary = score.pop("primary")
                log(f"epoch {epoch}: loss {record['loss']:.3f}  " + "  ".join(
                    f"val {LABELS[k[4:]]} {v:.1f}{unit(k[4:])}" for k, v in score.items() if v is not None and k != "val_pckh@0.5_labelled"))
                with writer.as_default():
                    for key, value in score.items():
                        if value is not None:
                            tf.summary.scalar(key, value, step=step)
                sign = -1.0 if primary in LOWER_IS_BETTER else 1.0  # errors (MPJPE) improve downwards
                value = score.get(f"val_{primary}")
                metric = sign * value if value is not None else (0.0 if sign > 0 else -math.inf)  # none scored: no gain
                if settings.patience:
                    if metric > best + settings.min_delta:
                        best, bad_epochs = metric, 0
                    else:
                        bad_epochs += 1
                        if bad_epochs >= settings.patience:
                            log(f"early stop: no {LABELS.get(primary, primary)} improvement for {bad_epochs} epoch(s)")
                            stopped = True
            history.append(record)
            window_start = time.perf_counter()  # validation time is not training throughput
            if stopped:
                break
    writer.flush()
    elapsed = time.perf_counter() - (first_step_done or t0)
    trained = max(step - start - 1, 0)
    manager.save(checkpoint_number=step)

    model_path = None
    if worker.is_chief:
        out_dir.mkdir(parents=True, exist_ok=True)
        model_path = out_dir / "model.keras"
        model.save(model_path)
        from mdeploy.exporters.reproducible import normalize_zip

        normalize_zip(model_path)
        (out_dir / "history.json").write_text(json.dumps(history, indent=2) + "\n")
    else:
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # a non-chief's checkpoints are scratch
    epochs_run = (step - 1) // steps_per_epoch + 1 if step else 0
    return TrainResult(
        model_path, step, epochs_run, start, stopped, trained * global_batch / max(elapsed, 1e-9), history, worker.is_chief
    )


def validate(model, pre: Preprocessing, keypoints: KeypointSet, stride: int, val_ds: Dataset, limit: int = 400) -> dict:
    """PCKh of the model being trained on (up to `limit` samples of) the validation split."""
    from mdeploy.evaluate.evaluator import evaluate
    from mdeploy.spec import DecodeSettings, TensorInfo

    h, w = pre.size
    spec = ModelSpec(
        name="training",
        input=TensorInfo("image", (1, h, w, 3)),
        output=TensorInfo("heatmaps", (1, h // stride, w // stride, len(keypoints))),
        preprocessing=pre,
        keypoints=keypoints,
        output_stride=stride,
        decode=DecodeSettings(),
    )

    def run(batch):
        out = model(batch, training=False)
        return np.asarray(out[-1] if isinstance(out, (list, tuple)) else out)

    result = evaluate(run, spec, val_ds, batch_size=32, limit=limit)
    return {f"val_{k}": v for k, v in result.metrics.items()} | {"primary": result.primary}


class _EtaClock:
    """The time left, from what the steps and validations so far really took.

    Step time is the wall time since the first step (which traces the graph) less the
    validations, per step; each validation still to come adds the mean of those measured.
    Before the first validation its cost is unknown, and the ETA says so with a `+`."""

    def __init__(self) -> None:
        self.t0: float | None = None
        self.validation_seconds: list[float] = []

    def start(self, now: float) -> None:
        self.t0 = now

    def validated(self, seconds: float) -> None:
        self.validation_seconds.append(seconds)

    def eta(self, now: float, steps_done: int, steps_left: int, validations_left: int) -> str:
        if self.t0 is None or steps_done <= 0:
            return "unknown" if steps_left else _duration(0.0)
        per_step = max(now - self.t0 - sum(self.validation_seconds), 0.0) / steps_done
        left = per_step * steps_left
        unknown = validations_left > 0 and not self.validation_seconds
        if self.validation_seconds:
            left += validations_left * sum(self.validation_seconds) / len(self.validation_seconds)
        if steps_left == 0:  # only validation left: its cost is known or it is not
            return "unknown" if unknown else _duration(left)
        return _duration(left) + ("+" if unknown else "")


def _duration(seconds: float) -> str:
    """A time left as "<1s", "42s", "3m05s" or "1h02m": rounded up, so it does not say 0 while work is left."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return "<1s"
    seconds = math.ceil(seconds - 1e-6)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
