"""tf.distribute strategies from `train.distribute`, and who the chief is.

- `none`: the default strategy (one device).
- `mirrored`: MirroredStrategy over this machine's GPUs (or its CPU).
- `multi_worker`: MultiWorkerMirroredStrategy across machines described by TF_CONFIG.
  Every worker runs the same command; all train synchronously; only the chief writes
  checkpoints and the model where the user will look for them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from mdeploy.errors import EnvironmentProblem


@dataclass(frozen=True)
class Worker:
    strategy: object
    is_chief: bool
    task: str  # "chief", "worker 1", ... for messages
    replicas: int


def make_strategy(mode: str) -> Worker:
    import tensorflow as tf

    if mode == "none":
        strategy = tf.distribute.get_strategy()
        return Worker(strategy, True, "chief", 1)
    if mode == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
        return Worker(strategy, True, "chief", strategy.num_replicas_in_sync)
    if mode == "multi_worker":
        config = _tf_config()
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        task = config.get("task", {})
        kind, index = task.get("type"), int(task.get("index", 0))
        has_chief = "chief" in config.get("cluster", {})
        chief = kind == "chief" or (kind == "worker" and index == 0 and not has_chief)
        return Worker(strategy, chief, "chief" if chief else f"{kind} {index}", strategy.num_replicas_in_sync)
    raise ValueError(f"unknown distribute mode {mode!r}")


def _tf_config() -> dict:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise EnvironmentProblem(
            "train.distribute is multi_worker but TF_CONFIG is not set",
            hint='set TF_CONFIG on every worker, e.g. {"cluster": {"worker": ["host1:2222", "host2:2222"]}, '
            '"task": {"type": "worker", "index": 0}}',
        )
    try:
        config = json.loads(raw)
        config["cluster"]["worker"]
    except (ValueError, KeyError, TypeError) as err:
        raise EnvironmentProblem(f"TF_CONFIG is not valid: {err}") from err
    return config
