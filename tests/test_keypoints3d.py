"""3-D keypoint sets: MuCo-21 and Human3.6M-17 with their root joint, as data, and how they map."""

from __future__ import annotations

import pytest

from mdeploy.keypoints import (
    MUCO21_FILE_NAMES,
    MUPOTS_SCORED,
    KeypointSet,
    canonical_joint,
    get_keypoint_set,
    joint_correspondence,
    map_names,
)

MUCO = get_keypoint_set("muco21")
H36M = get_keypoint_set("h36m17")


def test_muco21_is_mucos_order_with_the_pelvis_as_root():
    assert len(MUCO) == 21 and MUCO.root == "pelvis" and MUCO.root_index == 14
    # MuCo's files spell the joints their own way; each spelling names the joint at its position,
    # except "Head", which the alias table reads as Human3.6M's head top (MuCo's is the head centre).
    for i, spelling in enumerate(MUCO21_FILE_NAMES):
        expected = "head_top" if spelling == "Head" else MUCO.names[i]
        assert canonical_joint(spelling) == expected, (i, spelling)
    assert MUCO.names[16] == "head_centre" and MUCO.names[0] == "head_top"
    # MuPoTS scores the first 17: everything but hands and toes.
    assert MUPOTS_SCORED == 17 and set(MUCO.names[MUPOTS_SCORED:]) == {"right_hand", "left_hand", "right_toe", "left_toe"}
    # Left/right partners found by name are MuCo's flip pairs.
    assert MUCO.flip_pairs == ((2, 5), (3, 6), (4, 7), (8, 11), (9, 12), (10, 13), (17, 18), (19, 20))
    assert MUCO.flip_permutation()[17] == 18 and MUCO.flip_permutation()[14] == 14
    # The bones are MuCo's 20 (as its data module lists them, by index).
    muco_bones = {(0, 16), (16, 1), (1, 15), (15, 14), (14, 8), (14, 11), (8, 9), (9, 10), (10, 19), (11, 12), (12, 13),
                  (13, 20), (1, 2), (2, 3), (3, 4), (4, 17), (1, 5), (5, 6), (6, 7), (7, 18)}
    assert {frozenset(e) for e in MUCO.skeleton} == {frozenset(e) for e in muco_bones}


@pytest.mark.parametrize("kps", [MUCO, H36M], ids=lambda k: k.name)
def test_the_skeleton_is_a_tree_through_the_root(kps):
    assert len(kps.skeleton) == len(kps) - 1
    reached, frontier = {kps.root_index}, [kps.root_index]
    while frontier:
        j = frontier.pop()
        for a, b in kps.skeleton:
            for x, y in ((a, b), (b, a)):
                if x == j and y not in reached:
                    reached.add(y)
                    frontier.append(y)
    assert reached == set(range(len(kps)))


def test_h36m17_has_a_root_and_2d_sets_do_not():
    assert H36M.root == "pelvis" and H36M.root_index == 0
    assert H36M.to_json()["root"] == "pelvis"
    aic = get_keypoint_set("aic14")
    assert aic.root is None and aic.root_index is None
    assert "root" not in aic.to_json()  # 2-D sets' json is unchanged


def test_a_root_must_be_one_of_the_joints():
    with pytest.raises(ValueError, match="root joint"):
        KeypointSet("bad", ("pelvis", "spine"), ((0, 1),), (), root="thorax")


def test_h36m17_and_muco21_share_sixteen_joints_by_name():
    onto_muco = map_names(H36M.names, MUCO, source="h36m")
    assert len(onto_muco.shared) == 16
    assert set(onto_muco.missing) == {"head_centre", "right_hand", "left_hand", "right_toe", "left_toe"}
    assert onto_muco.dropped == ("neck_base",)
    corr = joint_correspondence(H36M, MUCO)
    assert corr[MUCO.root_index] == H36M.root_index  # the roots correspond
    assert corr[MUCO.index("right_ankle")] == H36M.index("right_ankle") == 3
    assert corr[MUCO.index("head_top")] == 10 and corr[MUCO.index("head_centre")] is None
    back = joint_correspondence(MUCO, H36M)
    assert back[H36M.index("neck_base")] is None and back[H36M.index("thorax")] == 1
    # mmpose's Human3.6M files call the root "root (pelvis)".
    assert canonical_joint("root (pelvis)") == "pelvis"
