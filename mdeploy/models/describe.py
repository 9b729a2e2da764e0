"""What `mdeploy models` lists: each registered architecture, built once at its default size."""

from __future__ import annotations

from mdeploy.models import MODELS, create_model
from mdeploy.models.profile import count_macs, count_params

# Families described with another keypoint count than the 2D default: the volumetric (3D)
# models at MuCo-21, MobileHumanPose's joint set, which their reference counts assume.
FAMILY_KEYPOINTS = {"volumetric": 21, "openpose": 18}  # openpose: the COCO-18 parts of its PAF layout


def describe_all(include_test: bool = True, keypoints: int = 14) -> list[dict]:
    rows = []
    for name, info in MODELS.items():
        if info.test_only and not include_test:
            continue
        params = info.params(None)
        count = FAMILY_KEYPOINTS.get(info.family, keypoints)
        model = create_model(name, params, info.input_size, count)
        rows.append(
            {
                "name": name,
                "family": info.family,
                "description": info.description,
                "params": params,
                "input_size": list(info.input_size),
                "output_stride": info.output_stride,
                "outputs": info.stage_outputs(params),
                "final_output": info.stage_outputs(params)[-1],
                "parameters": count_params(model),
                "macs": count_macs(model),
                "reference": info.reference,
                "test_only": info.test_only,
                "keypoints": count,
            }
        )
    return rows
