"""Keypoint sets as data: names in model channel order, skeleton, flip pairs.

One source of truth for everything that names or draws joints: the ModelSpec, the
evaluator, the generated Kotlin/Swift and the report all read a `KeypointSet`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mdeploy.registry import Registry


@dataclass(frozen=True)
class KeypointSet:
    name: str
    names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...]
    flip_pairs: tuple[tuple[int, int], ...]
    # Joints whose distance is the head size of PCKh, when the set has them.
    head: tuple[int, int] | None = None

    def __post_init__(self):
        n = len(self.names)
        for a, b in self.skeleton + self.flip_pairs + ((self.head,) if self.head else ()):
            if not (0 <= a < n and 0 <= b < n):
                raise ValueError(f"keypoint set {self.name}: index out of range in ({a}, {b})")

    def __len__(self) -> int:
        return len(self.names)

    def flip_permutation(self) -> tuple[int, ...]:
        """Channel order after a horizontal flip: left and right swap."""
        perm = list(range(len(self.names)))
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return tuple(perm)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "names": list(self.names),
            "skeleton": [list(e) for e in self.skeleton],
            "flip_pairs": [list(p) for p in self.flip_pairs],
            "head": list(self.head) if self.head else None,
        }


KEYPOINT_SETS: Registry[KeypointSet] = Registry("keypoint set")


def _add(kps: KeypointSet) -> None:
    KEYPOINT_SETS.register(kps.name, kps)


# AI Challenger order, as the PoseEstimationForMobile models emit their 14 channels.
_add(
    KeypointSet(
        name="aic14",
        names=(
            "head_top", "neck",
            "right_shoulder", "right_elbow", "right_wrist",
            "left_shoulder", "left_elbow", "left_wrist",
            "right_hip", "right_knee", "right_ankle",
            "left_hip", "left_knee", "left_ankle",
        ),
        skeleton=(
            (0, 1), (1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7),
            (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
        ),
        flip_pairs=((2, 5), (3, 6), (4, 7), (8, 11), (9, 12), (10, 13)),
        head=(0, 1),
    )
)

_add(
    KeypointSet(
        name="coco17",
        names=(
            "nose", "left_eye", "right_eye", "left_ear", "right_ear",
            "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
            "left_wrist", "right_wrist", "left_hip", "right_hip",
            "left_knee", "right_knee", "left_ankle", "right_ankle",
        ),
        skeleton=(
            (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12),
            (5, 6), (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2),
            (1, 3), (2, 4), (3, 5), (4, 6),
        ),
        flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    )
)


def get_keypoint_set(name: str) -> KeypointSet:
    return KEYPOINT_SETS.get(name)
