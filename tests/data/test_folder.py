"""Unlabelled image folders (`data.calibration: {images: ...}`): what is read, in which order, and
the errors a user sees for a folder that cannot serve."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mdeploy.data.folder import image_files, image_listing, load_images
from mdeploy.errors import InputError
from mdeploy.keypoints import get_keypoint_set
from mdeploy.recipe.schema import ImagesData


def _image(path, size=(40, 30), value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)
    return path


def test_images_are_read_whole_in_sorted_order_with_subfolders_on_request(tmp_path):
    _image(tmp_path / "a" / "b.png")
    _image(tmp_path / "a" / "a.JPG", size=(64, 48))
    _image(tmp_path / "a" / "sub" / "c.jpeg")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    ds = load_images([tmp_path / "a"], get_keypoint_set("aic14"))
    assert [s.image.name for s in ds.samples] == ["a.JPG", "b.png"]
    first = ds.samples[0]
    assert (first.width, first.height) == (64, 48) and first.crop_box(ds.crop) == (0.0, 0.0, 64.0, 48.0)
    assert ds.crop == "image" and first.keypoints.shape == (14, 3) and not first.keypoints[:, 2].any()
    deep = load_images([tmp_path / "a", tmp_path / "a" / "sub"], get_keypoint_set("aic14"), recursive=True)
    assert [s.image.name for s in deep.samples] == ["a.JPG", "b.png", "c.jpeg"]  # each image once


def test_a_folder_without_images_or_with_a_broken_one_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    _image(tmp_path / "empty" / "deep" / "x.png")
    with pytest.raises(InputError, match=r"no images .* in .*empty \(recursive: true also reads subfolders\)"):
        image_files([tmp_path / "empty"], where="recipe.yaml:3:5")
    with pytest.raises(InputError, match="image folder not found: .*missing") as caught:
        image_files([tmp_path / "missing"], where="recipe.yaml:3:5")
    assert caught.value.where == "recipe.yaml:3:5"
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(InputError, match="cannot read image .*cut.jpg"):
        load_images([tmp_path / "broken"], get_keypoint_set("aic14"))


def test_the_listing_changes_when_an_image_is_added_or_rewritten(tmp_path):
    images = ImagesData(folders=[tmp_path])
    path = _image(tmp_path / "a.png")
    before = image_listing(images)
    _image(tmp_path / "b.png")
    added = image_listing(images)
    _image(path, size=(80, 60), value=200)
    assert len(before) == 1 and len(added) == 2 and image_listing(images) != added
