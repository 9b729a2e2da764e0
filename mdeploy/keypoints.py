"""Keypoint sets as data: names in model channel order, skeleton, flip pairs, and the
alias table that maps other datasets' spellings onto them.

One source of truth for everything that names or draws joints: the ModelSpec, the
dataset readers, the evaluator, the generated Kotlin/Swift and the report all read a
`KeypointSet`. A dataset whose joints come in another order (AI Challenger's own files
list the shoulders first, PoseEstimationForMobile's models emit the head top first) is
mapped by name through `map_names`, never read by position when it has names.

Joint names are canonical snake_case anatomical names (`head_top`, `left_ankle`);
`ALIASES` lists the other spellings datasets use for the same joint ("Head top", "head",
"r ankle", "RAnkle", "right_foot" in Human3.6M). Distinct anatomical points keep distinct
names: MPII's `upper_neck` and `thorax` are not AI Challenger's `neck`, so a model is only
scored on the joints both sides really share.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mdeploy.errors import InputError
from mdeploy.registry import Registry


@dataclass(frozen=True)
class KeypointSet:
    name: str
    names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...]
    flip_pairs: tuple[tuple[int, int], ...]
    # Joints whose distance is the head size of PCKh, when the set has them.
    head: tuple[int, int] | None = None
    title: str = ""  # the dataset convention, for messages and docs
    # The joint 3-D poses are measured from (root-relative depth, MPJPE's alignment); None for 2-D sets.
    root: str | None = None

    def __post_init__(self):
        n = len(self.names)
        if self.root is not None and self.root not in self.names:
            raise ValueError(f"keypoint set {self.name}: root joint {self.root!r} is not one of its joints")
        for a, b in self.skeleton + self.flip_pairs + ((self.head,) if self.head else ()):
            if not (0 <= a < n and 0 <= b < n):
                raise ValueError(f"keypoint set {self.name}: index out of range in ({a}, {b})")
        unknown = [j for j in self.names if j not in JOINTS]
        if unknown:
            raise ValueError(f"keypoint set {self.name}: joints missing from the alias table: {unknown}")

    def __len__(self) -> int:
        return len(self.names)

    def index(self, joint: str) -> int | None:
        return self.names.index(joint) if joint in self.names else None

    @property
    def root_index(self) -> int | None:
        """Channel of the root joint (3-D sets), None when the set has no root."""
        return self.names.index(self.root) if self.root is not None else None

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
            **({"root": self.root} if self.root is not None else {}),  # 2-D sets' json stays as it was
        }


# ---------------------------------------------------------------------------- aliases

# Canonical joint -> the other spellings datasets use for it. Spellings are compared after
# `normalize_name` (case, separators, camelCase and the r/l abbreviations folded), so
# "Right Shoulder", "right_shoulder", "RShoulder" and "r shoulder" need no entry here.
ALIASES: dict[str, tuple[str, ...]] = {
    "head_top": ("head", "headtop", "top_of_head", "head_end", "head_end_site"),
    "neck": ("neck_root",),
    "upper_neck": ("upperneck",),
    "thorax": ("chest", "spine3"),
    "neck_base": ("neck_nose", "neck/nose"),
    "pelvis": ("hip", "root", "hips", "mid_hip"),
    "spine": ("spine1", "torso", "belly"),
    "nose": (),
    "left_eye": (),
    "right_eye": (),
    "left_ear": (),
    "right_ear": (),
}
_LIMBS = ("shoulder", "elbow", "wrist", "hip", "knee", "ankle")
for _side in ("left", "right"):
    for _limb in _LIMBS:
        ALIASES[f"{_side}_{_limb}"] = ()
    ALIASES[f"{_side}_ankle"] = ("foot",)  # Human3.6M's "foot" joint is the ankle
    # MuCo-3DHP / MuPoTS extremities (3-D sets): the hand beyond the wrist, the toe beyond the ankle.
    ALIASES[f"{_side}_hand"] = ()
    ALIASES[f"{_side}_toe"] = ("toes", "toe_base", "big_toe")
# MuCo's "Head" is the middle of the head, a joint of its own between the thorax and the head
# top; the bare spelling "head" stays Human3.6M's head top above, so a MuCo file's own names
# are read through MUCO21_FILE_NAMES (below), never by the alias table alone.
ALIASES["head_centre"] = ("head_center", "head_middle", "mid_head")
ALIASES["pelvis"] = ALIASES["pelvis"] + ("root (pelvis)",)  # mmpose's Human3.6M files

JOINTS = frozenset(ALIASES)


def normalize_name(name: str) -> str:
    """A spelling folded for comparison: 'RShoulder', 'r shoulder', 'Right-Shoulder' -> 'right_shoulder'."""
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", str(name).strip())  # camelCase -> camel Case
    words = [w for w in re.split(r"[^a-z0-9/]+", text.lower()) if w]
    if len(words) >= 2 and words[0] in ("r", "l"):
        words[0] = "right" if words[0] == "r" else "left"
    elif len(words) == 1 and len(words[0]) > 1 and words[0][0] in "rl" and words[0][1:] in _LIMBS + ("foot",):
        words = ["right" if words[0][0] == "r" else "left", words[0][1:]]  # 'rankle' -> right ankle
    return "_".join(words)


def _side_alias(side: str, alias: str) -> str:
    return f"{side}_{alias}"


def _build_lookup() -> dict[str, str]:
    lookup: dict[str, str] = {}
    for joint, spellings in ALIASES.items():
        lookup[normalize_name(joint)] = joint
        for spelling in spellings:
            side = joint.split("_", 1)[0] if joint.startswith(("left_", "right_")) else None
            key = normalize_name(_side_alias(side, spelling) if side else spelling)
            if key in lookup and lookup[key] != joint:
                raise ValueError(f"alias {spelling!r} names both {lookup[key]} and {joint}")
            lookup[key] = joint
    return lookup


_LOOKUP = _build_lookup()


def canonical_joint(name: str) -> str | None:
    """The canonical joint a dataset's spelling names, or None when the table does not know it."""
    return _LOOKUP.get(normalize_name(name))


@dataclass(frozen=True)
class JointMapping:
    """How a file's keypoints land in a keypoint set's channels.

    `source[i]` is the file's index of target joint i, or None when the file lacks it.
    `dropped` lists the file's joints the target set has no channel for.
    """

    target: KeypointSet
    file_names: tuple[str, ...]
    source: tuple[int | None, ...]
    dropped: tuple[str, ...]
    by_position: bool = False

    @property
    def shared(self) -> tuple[str, ...]:
        return tuple(n for n, s in zip(self.target.names, self.source) if s is not None)

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(n for n, s in zip(self.target.names, self.source) if s is None)

    @property
    def identity(self) -> bool:
        return self.source == tuple(range(len(self.target))) and len(self.file_names) == len(self.target)

    def describe(self) -> str:
        if self.by_position:
            return f"read by position as {self.target.name} (the file names no keypoints)"
        if self.identity:
            return f"keypoints mapped by name: the file's order is {self.target.name}'s"
        text = f"keypoints mapped by name onto {self.target.name}: {len(self.shared)} of {len(self.target)} shared"
        if self.missing:
            text += f"; not in the file: {', '.join(self.missing)}"
        if self.dropped:
            text += f"; not scored: {', '.join(self.dropped)}"
        return text

    def to_json(self) -> dict:
        return {
            "target": self.target.name,
            "by_position": self.by_position,
            "shared": list(self.shared),
            "missing": list(self.missing),
            "dropped": list(self.dropped),
            "reordered": not self.identity and not self.by_position,
        }


MIN_SHARED = 4  # fewer shared joints than this cannot score a pose model


def map_names(file_names, target: KeypointSet, *, source: str, where: str | None = None) -> JointMapping:
    """Map a file's keypoint names onto `target`'s channels by name (through the alias table).

    Raises InputError listing both name lists when a name is unknown, two names mean one
    joint, or the two sets share too few joints to score a model.
    """
    file_names = tuple(str(n) for n in file_names)
    canon = [canonical_joint(n) for n in file_names]

    def fail(problem: str) -> InputError:
        return InputError(
            f"{source}: {problem}",
            where=where,
            hint=f"the file's keypoints: {', '.join(file_names)}; {target.name} expects: {', '.join(target.names)}",
        )

    unknown = [n for n, c in zip(file_names, canon) if c is None]
    if unknown:
        raise fail(f"keypoint name{'s' if len(unknown) > 1 else ''} {', '.join(repr(u) for u in unknown)} not known to mdeploy's alias table")
    seen: dict[str, str] = {}
    for name, joint in zip(file_names, canon):
        if joint in seen:
            raise fail(f"keypoints {seen[joint]!r} and {name!r} both name the joint {joint}")
        seen[joint] = name
    position = {joint: i for i, joint in enumerate(canon)}
    mapped = tuple(position.get(joint) for joint in target.names)
    shared = sum(s is not None for s in mapped)
    if shared < min(MIN_SHARED, len(target)):
        raise fail(f"shares only {shared} joint(s) with keypoint set {target.name}; cannot map it")
    dropped = tuple(n for n, c in zip(file_names, canon) if c not in target.names)
    return JointMapping(target, file_names, mapped, dropped)


def positional_mapping(count: int, target: KeypointSet, *, source: str, where: str | None = None) -> JointMapping:
    """The mapping of a file without names: its joints are taken in `target`'s order."""
    if count != len(target):
        raise InputError(
            f"{source}: {count} keypoints per person and no keypoint names; keypoint set {target.name} has {len(target)}",
            where=where,
            hint="add the names (categories[].keypoints) so mdeploy can map them",
        )
    return JointMapping(target, target.names, tuple(range(count)), (), by_position=True)


# ---------------------------------------------------------------------------- the sets

KEYPOINT_SETS: Registry[KeypointSet] = Registry("keypoint set")


def _add(kps: KeypointSet) -> None:
    KEYPOINT_SETS.register(kps.name, kps)


def _pairs(names: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    """Left/right partners of a set, found by name."""
    out = []
    for i, n in enumerate(names):
        if n.startswith("right_") and f"left_{n[6:]}" in names:
            out.append((i, names.index(f"left_{n[6:]}")))
    return tuple(sorted((min(a, b), max(a, b)) for a, b in out))


def _edges(names: tuple[str, ...], *pairs: tuple[str, str]) -> tuple[tuple[int, int], ...]:
    return tuple((names.index(a), names.index(b)) for a, b in pairs)


# AI Challenger joints in the order PoseEstimationForMobile's models emit their 14 channels
# (AI Challenger's own files list them in another order: shoulders first, head top 13th).
_AIC = (
    "head_top", "neck",
    "right_shoulder", "right_elbow", "right_wrist",
    "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle",
    "left_hip", "left_knee", "left_ankle",
)
_add(
    KeypointSet(
        name="aic14",
        names=_AIC,
        skeleton=(
            (0, 1), (1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7),
            (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
        ),
        flip_pairs=((2, 5), (3, 6), (4, 7), (8, 11), (9, 12), (10, 13)),
        head=(0, 1),
        title="AI Challenger 14 (PoseEstimationForMobile channel order)",
    )
)

_COCO = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
_add(
    KeypointSet(
        name="coco17",
        names=_COCO,
        skeleton=(
            (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12),
            (5, 6), (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2),
            (1, 3), (2, 4), (3, 5), (4, 6),
        ),
        flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
        title="COCO 17",
    )
)

_MPII = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "pelvis", "thorax", "upper_neck", "head_top",
    "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
)
_add(
    KeypointSet(
        name="mpii16",
        names=_MPII,
        skeleton=_edges(
            _MPII,
            ("right_ankle", "right_knee"), ("right_knee", "right_hip"), ("right_hip", "pelvis"),
            ("left_ankle", "left_knee"), ("left_knee", "left_hip"), ("left_hip", "pelvis"),
            ("pelvis", "thorax"), ("thorax", "upper_neck"), ("upper_neck", "head_top"),
            ("right_wrist", "right_elbow"), ("right_elbow", "right_shoulder"), ("right_shoulder", "thorax"),
            ("left_wrist", "left_elbow"), ("left_elbow", "left_shoulder"), ("left_shoulder", "thorax"),
        ),
        flip_pairs=_pairs(_MPII),
        head=(9, 8),
        title="MPII 16",
    )
)

_CROWDPOSE = (
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "head_top", "neck",
)
_add(
    KeypointSet(
        name="crowdpose14",
        names=_CROWDPOSE,
        skeleton=_edges(
            _CROWDPOSE,
            ("head_top", "neck"), ("neck", "left_shoulder"), ("neck", "right_shoulder"),
            ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
            ("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist"),
            ("left_shoulder", "left_hip"), ("right_shoulder", "right_hip"), ("left_hip", "right_hip"),
            ("left_hip", "left_knee"), ("left_knee", "left_ankle"), ("right_hip", "right_knee"), ("right_knee", "right_ankle"),
        ),
        flip_pairs=_pairs(_CROWDPOSE),
        head=(12, 13),
        title="CrowdPose 14",
    )
)

_H36M = (
    "pelvis", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "spine", "thorax", "neck_base", "head_top",
    "left_shoulder", "left_elbow", "left_wrist", "right_shoulder", "right_elbow", "right_wrist",
)
_add(
    KeypointSet(
        name="h36m17",
        names=_H36M,
        skeleton=_edges(
            _H36M,
            ("pelvis", "right_hip"), ("right_hip", "right_knee"), ("right_knee", "right_ankle"),
            ("pelvis", "left_hip"), ("left_hip", "left_knee"), ("left_knee", "left_ankle"),
            ("pelvis", "spine"), ("spine", "thorax"), ("thorax", "neck_base"), ("neck_base", "head_top"),
            ("thorax", "left_shoulder"), ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
            ("thorax", "right_shoulder"), ("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist"),
        ),
        flip_pairs=_pairs(_H36M),
        title="Human3.6M 17 (pelvis is the root)",
        root="pelvis",
    )
)

# MuCo-3DHP / MuPoTS-3D 21 joints in the order MobileHumanPose's MuCo data emits its channels
# (FACTS §10): MuPoTS scores the first 17 (MUPOTS_SCORED); the pelvis is the root.
_MUCO21 = (
    "head_top", "thorax",
    "right_shoulder", "right_elbow", "right_wrist",
    "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle",
    "left_hip", "left_knee", "left_ankle",
    "pelvis", "spine", "head_centre",
    "right_hand", "left_hand", "right_toe", "left_toe",
)
# The same joints as MuCo's files spell them (position i is _MUCO21[i]); "Head" is the head
# centre there, not Human3.6M's head top, so these spellings map by position, not by alias.
MUCO21_FILE_NAMES = (
    "Head_top", "Thorax", "R_Shoulder", "R_Elbow", "R_Wrist", "L_Shoulder", "L_Elbow", "L_Wrist",
    "R_Hip", "R_Knee", "R_Ankle", "L_Hip", "L_Knee", "L_Ankle", "Pelvis", "Spine", "Head",
    "R_Hand", "L_Hand", "R_Toe", "L_Toe",
)
MUPOTS_SCORED = 17  # MuPoTS-3D's 3DPCK counts the first 17 joints of muco21
_add(
    KeypointSet(
        name="muco21",
        names=_MUCO21,
        skeleton=_edges(
            _MUCO21,
            ("head_top", "head_centre"), ("head_centre", "thorax"), ("thorax", "spine"), ("spine", "pelvis"),
            ("pelvis", "right_hip"), ("right_hip", "right_knee"), ("right_knee", "right_ankle"), ("right_ankle", "right_toe"),
            ("pelvis", "left_hip"), ("left_hip", "left_knee"), ("left_knee", "left_ankle"), ("left_ankle", "left_toe"),
            ("thorax", "right_shoulder"), ("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist"), ("right_wrist", "right_hand"),
            ("thorax", "left_shoulder"), ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"), ("left_wrist", "left_hand"),
        ),
        flip_pairs=_pairs(_MUCO21),
        title="MuCo-3DHP / MuPoTS 21 (pelvis is the root; MuPoTS scores the first 17)",
        root="pelvis",
    )
)


def joint_correspondence(source: KeypointSet, target: KeypointSet) -> tuple[int | None, ...]:
    """For each of `target`'s joints, the channel of the same joint in `source` (None: not there).

    By canonical name, so Human3.6M-17 and MuCo-21 share 16 joints (neither has the other's
    neck base / head centre, hands or toes); a 3-D metric compares only those.
    """
    return tuple(source.index(joint) for joint in target.names)


# tf-openpose's COCO-18 parts in its models' heatmap channel order (FACTS §9): COCO-17 plus
# the neck (the midpoint of the shoulders in its training targets), right side first.
_COCO18 = (
    "nose", "neck",
    "right_shoulder", "right_elbow", "right_wrist",
    "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle",
    "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)
# The 19 limbs of the release, in the order its post-processing connects them (pafprocess's
# COCOPAIRS). The last two (shoulder-ear) only join parts to people already started.
_COCO18_LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
    (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17),
)
_add(
    KeypointSet(
        name="coco18",
        names=_COCO18,
        skeleton=_COCO18_LIMBS,
        flip_pairs=_pairs(_COCO18),
        title="COCO 18 (tf-openpose / OpenPose channel order, with the neck)",
    )
)


@dataclass(frozen=True)
class PafLayout:
    """Which output channels of a multi-person PAF model mean what, as data.

    The model's output concatenates `heatmaps` channels (one per part of `keypoints`, then
    the background channel when `background` is set) and 2 x len(limbs) PAF channels.
    `paf_channels[k]` is the (x, y) pair of limb k *within the PAF block*; `limbs[k]` are the
    two parts it joins (index into the keypoint set), and a limb k >= `new_person_limbs` may
    only extend a person, never start one.
    """

    name: str
    keypoints: str  # a registered keypoint set
    limbs: tuple[tuple[int, int], ...]
    paf_channels: tuple[tuple[int, int], ...]
    background: int | None  # heatmap channel of the background, if any
    new_person_limbs: int
    stride: int = 8

    def __post_init__(self):
        parts = len(KEYPOINT_SETS.get(self.keypoints))
        if len(self.limbs) != len(self.paf_channels):
            raise ValueError(f"PAF layout {self.name}: {len(self.limbs)} limbs but {len(self.paf_channels)} PAF channel pairs")
        channels = sorted(c for pair in self.paf_channels for c in pair)
        if channels != list(range(2 * len(self.limbs))):
            raise ValueError(f"PAF layout {self.name}: the PAF channel pairs must use 0..{2 * len(self.limbs) - 1} once each")
        for a, b in self.limbs:
            if not (0 <= a < parts and 0 <= b < parts):
                raise ValueError(f"PAF layout {self.name}: limb ({a}, {b}) outside the {parts} parts")

    @property
    def parts(self) -> int:
        return len(KEYPOINT_SETS.get(self.keypoints))

    @property
    def heatmaps(self) -> int:
        return self.parts + (1 if self.background is not None else 0)

    @property
    def pafs(self) -> int:
        return 2 * len(self.limbs)

    @property
    def channels(self) -> int:
        return self.heatmaps + self.pafs

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "keypoints": self.keypoints,
            "limbs": [list(limb) for limb in self.limbs],
            "paf_channels": [list(pair) for pair in self.paf_channels],
            "background": self.background,
            "new_person_limbs": self.new_person_limbs,
            "stride": self.stride,
            "heatmaps": self.heatmaps,
            "pafs": self.pafs,
        }


# tf-openpose's released models (mobilenet_thin, mobilenet_v2_*, cmu): output
# Openpose/concat_stage7 = 19 heatmaps (18 parts + background at 18), then 38 PAF channels;
# pafprocess's COCOPAIRS_NET gives each limb's x/y channels within the PAF block.
TF_OPENPOSE_COCO18 = PafLayout(
    name="tf_openpose_coco18",
    keypoints="coco18",
    limbs=_COCO18_LIMBS,
    paf_channels=(
        (12, 13), (20, 21), (14, 15), (16, 17), (22, 23), (24, 25), (0, 1), (2, 3), (4, 5), (6, 7),
        (8, 9), (10, 11), (28, 29), (30, 31), (34, 35), (32, 33), (36, 37), (18, 19), (26, 27),
    ),
    background=18,
    new_person_limbs=17,
    stride=8,
)


def get_keypoint_set(name: str) -> KeypointSet:
    return KEYPOINT_SETS.get(name)
