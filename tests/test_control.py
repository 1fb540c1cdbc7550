"""Structure control: routing maps, identity dictionary, canny, boxes, validation, and background blending."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sigma_studio.model import ControlSpec, GenerationConfig, InputError, build_request
from sigma_studio.model.hub import WeightsUnavailableError
from sigma_studio.model.images import patchify, to_tensor
from sigma_studio.model.request.control import Box, canny_edges, estimate_depth, render_boxes
from sigma_studio.model.request.multisubject import (
    Box3D,
    Subject,
    identity_dictionary,
    regions,
    routing_maps,
    spatial_control,
)

H, W = 6, 8


def solid(rgb) -> Image.Image:
    return Image.new("RGB", (8, 8), rgb)


def mask(y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def test_overlapping_boxes_are_composited_in_both_orders():
    subjects = [Subject(solid("red"), box=Box(0, 0, 5, 4)), Subject(solid("blue"), box=Box(3, 2, 8, 6))]
    asc, desc = routing_maps(regions(subjects, (H, W)))
    expect_asc = np.zeros((H, W), np.uint8)
    expect_asc[0:4, 0:5] = 10
    expect_asc[2:6, 3:8] = 20  # subject 2 painted last: on top in the ascending map
    expect_desc = np.zeros((H, W), np.uint8)
    expect_desc[2:6, 3:8] = 20
    expect_desc[0:4, 0:5] = 10  # subject 1 on top in the descending map
    assert np.array_equal(asc, expect_asc) and np.array_equal(desc, expect_desc)
    assert (asc != desc).sum() == 4  # exactly the 2x2 overlap differs


def test_precise_masks_give_equal_maps_and_stay_on_top_of_boxes():
    a, b = mask(0, 3, 0, 4), mask(3, 6, 4, 8)
    asc, desc = routing_maps(regions([Subject(solid("red"), mask=a), Subject(solid("blue"), mask=b)], (H, W)))
    assert np.array_equal(asc, desc) and set(np.unique(asc)) == {0, 10, 20}
    mixed = [Subject(solid("red"), mask=mask(0, 6, 0, 8)), Subject(solid("blue"), box=Box(0, 0, 8, 6))]
    asc, desc = routing_maps(regions(mixed, (H, W)))
    assert (asc == 10).all() and (desc == 10).all()  # the precise mask says subject 1 is in front


def test_routing_step_spreads_the_levels_and_bounds_the_subject_count():
    subjects = [Subject(solid("red"), mask=mask(0, 3, 0, 4)), Subject(solid("blue"), mask=mask(3, 6, 4, 8))]
    asc, _ = routing_maps(regions(subjects, (H, W)), step=50)
    assert set(np.unique(asc)) == {0, 50, 100}
    six = [Subject(solid("red"), box=Box(k, 0, k + 1, 1)) for k in range(6)]
    with pytest.raises(InputError, match="6 subjects given; this model's routing maps \\(step 50\\) hold at most 5"):
        spatial_control(regions(six, (H, W)), step=50)
    assert np.asarray(spatial_control(regions(six, (H, W)), step=42))[..., 0].max() == 252


def test_structure_channel_holds_depth_inside_subjects_only():
    depth = np.full((H, W), 77, np.uint8)
    subjects = [
        Subject(solid("red"), mask=mask(0, 2, 0, 2), depth=depth),
        Subject(solid("blue"), box=Box(4, 0, 8, 2)),
    ]
    reg = regions(subjects, (H, W))
    assert (reg.structure[0:2, 0:2] == 77).all()
    assert (reg.structure[0:2, 4:8] == 0).all()  # a 2-D box has no depth
    assert reg.structure[3:].sum() == 0  # background
    control = np.asarray(spatial_control(reg))
    assert control.shape == (H, W, 3) and np.array_equal(control[..., 2], reg.structure)


def test_3d_boxes_project_and_nearer_is_brighter():
    near = Box3D(center=(0.0, 0.0, 2.0), size=(0.5, 0.5, 0.5))
    far = Box3D(center=(0.6, 0.0, 4.0), size=(0.5, 0.5, 0.5))
    reg = regions([Subject(solid("red"), box3d=near), Subject(solid("blue"), box3d=far)], (64, 64))
    m_near, m_far = reg.regions
    ys, xs = np.nonzero(m_near)
    assert abs(xs.mean() - 32) < 2 and abs(ys.mean() - 32) < 2 and m_near.sum() > m_far.sum()
    # per-pixel disparity of the surfaces: the near box's front face (z 1.75) is 255, the far one's (z 3.75) 119
    assert reg.structure[32, 32] == 255 and 117 <= reg.structure[m_far & ~m_near].max() <= 121
    with pytest.raises(InputError, match="behind the camera"):
        regions([Subject(solid("red"), box3d=Box3D((0, 0, 0.1), (1, 1, 1)))], (64, 64))


def test_3d_box_depth_follows_its_surface():
    import math

    front = Box3D(center=(0.0, 0.0, 3.0), size=(1.0, 1.0, 1.0))
    z = front.depth_map(64, 64)
    assert np.allclose(z[np.isfinite(z)].min(), 2.5) and z[32, 32] == pytest.approx(2.5)  # the front face
    turned = Box3D(center=(0.0, 0.0, 3.0), size=(2.0, 1.0, 1.0), yaw=math.radians(40))
    reg = regions([Subject(solid("red"), box3d=turned)], (64, 64))
    values = reg.structure[reg.regions[0]]
    assert values.max() == 255 and values.min() < 200  # one end of the turned box is much nearer than the other


def test_identity_dictionary_keeps_aspect_and_wraps_into_columns():
    wide = Image.new("RGB", (40, 20), (255, 0, 0))
    d = np.asarray(identity_dictionary([Subject(wide, box=Box(0, 0, 1, 1))], tile=8))
    assert d.shape == (8, 8, 3) and (d[2:6] == (255, 0, 0)).all() and (d[:2] == 0).all()  # letterboxed, not stretched
    many = [Subject(solid((10 * k, 0, 0)), box=Box(0, 0, 1, 1)) for k in range(1, 8)]
    d = np.asarray(identity_dictionary(many, tile=4, max_rows=5))
    assert d.shape == (16, 8, 3)  # 7 subjects: 2 columns of 4 rows, filled top to bottom then left to right
    assert tuple(d[0, 0]) == (10, 0, 0) and tuple(d[12, 0]) == (40, 0, 0) and tuple(d[0, 4]) == (50, 0, 0)
    assert (d[12:, 4:] == 0).all()  # the eighth cell is empty


def test_identity_dictionary_stacks_tiles_in_subject_order():
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    d = np.asarray(identity_dictionary([Subject(solid(c), box=Box(0, 0, 1, 1)) for c in colours], tile=4))
    assert d.shape == (12, 4, 3)
    for i, c in enumerate(colours):
        assert (d[4 * i : 4 * i + 4] == c).all()


@pytest.mark.parametrize(
    ("subjects", "match"),
    [
        ([Subject(solid("red"), box=Box(0, 0, 1, 1))] * 11, "at most 10"),
        ([Subject(solid("red"), box=Box(0, 0, 9, 2))], "outside the 8x6 image"),
        ([Subject(solid("red"), box=Box(2, 2, 2, 5))], "zero area"),
        ([Subject(solid("red"), mask=np.ones((5, 5), bool))], "mask is 5x5, the output is 8x6"),
        (
            [Subject(solid("red"), box=Box(0, 0, 1, 1), id="a"), Subject(solid("blue"), box=Box(0, 0, 1, 1), id="a")],
            "unique",
        ),
        ([Subject(solid("red"), mask=mask(0, 1, 0, 1), depth=np.zeros((2, 2), np.uint8))], "depth map is 2x2"),
        ([Subject(solid("red"), box=Box(0, 0, 1, 1), mask=mask(0, 1, 0, 1))], "exactly one placement"),
        ([Subject(solid("red"))], "exactly one placement"),
        ([], "at least one subject"),
    ],
)
def test_validation_errors(subjects, match):
    with pytest.raises(InputError, match=match):
        regions(subjects, (H, W))


def test_box_parsing():
    assert Box.parse("0.25,0,0.5,1:cat", 200, 100) == Box(50, 0, 100, 100, "cat")
    assert Box.parse("10,20,30,40", 200, 100) == Box(10, 20, 30, 40)
    with pytest.raises(InputError, match="not a box"):
        Box.parse("1,2,3", 10, 10)


def test_canny_on_a_synthetic_square():
    img = Image.new("L", (32, 32), 0)
    img.paste(255, (8, 8, 24, 24))
    edges = np.asarray(canny_edges(img, 50, 150))[..., 0]
    assert edges[8:24, 7:9].any() and edges[7:9, 8:24].any()  # the square's border
    assert not edges[12:20, 12:20].any() and not edges[:4, :4].any()  # nothing inside or far outside
    with pytest.raises(InputError, match="low < high"):
        canny_edges(img, 200, 100)


def test_box_control_image_and_layout_reference():
    img = np.asarray(render_boxes([Box(0, 0, 16, 16, "cat"), Box(16, 16, 32, 32)], (32, 32)))
    assert tuple(img[8, 8]) != (0, 0, 0) and tuple(img[24, 24]) != tuple(img[8, 8]) and tuple(img[4, 28]) == (0, 0, 0)


def test_depth_model_offline_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailableError) as err:
        estimate_depth(Image.new("RGB", (32, 32)))
    msg = str(err.value)
    assert "--depth-map" in msg and "sigma download depth" in msg and "\n" not in msg


def _png(tmp_path, name: str, img: Image.Image) -> str:
    img.save(tmp_path / name)
    return str(tmp_path / name)


def test_blending_keeps_the_background_latent_exactly(tiny_pipe, tmp_path):
    h, w = 64, 80
    bg = Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8))
    controls = ControlSpec(subjects=(f"{_png(tmp_path, 'red.png', solid('red'))}@box=16,16,48,48",),
                           background=_png(tmp_path, "bg.png", bg))  # fmt: skip
    req = build_request("a red cube on a table", arch=tiny_pipe.arch, controls=controls)
    assert req.size == (h, w)  # the background's size
    res = tiny_pipe(req.replace(config=req.config.replace(steps=4, seed=1)))
    x0 = patchify(tiny_pipe.vae.encode(to_tensor(bg)[None])[0], 2)
    keep = torch.from_numpy(req.insertion.keep).reshape(4, 16, 5, 16).permute(0, 2, 1, 3).reshape(20, -1).all(1)
    assert keep.sum() == 16 and (~keep).sum() == 4  # the 32x32 box covers 2x2 tokens
    assert torch.equal(res.latents[keep], x0[keep])
    assert not torch.allclose(res.latents[~keep], x0[~keep])
    # and the picture itself: the original pixels outside the subject, exactly; generated ones deep inside it
    out, original, kept = np.asarray(res.image), np.asarray(bg), req.insertion.keep
    assert np.array_equal(out[kept], original[kept])
    assert not np.array_equal(out[24:40, 24:40], original[24:40, 24:40])


@pytest.mark.parametrize("placement", ["box", "mask", "box3d", "mask_depth"])
def test_subject_generation_end_to_end(tiny_pipe, tmp_path, placement):
    m = np.zeros((64, 64), np.uint8)
    m[8:40, 8:40] = 255
    mask_file = _png(tmp_path, "m.png", Image.fromarray(m))
    depth_file = _png(tmp_path, "d.png", Image.fromarray(np.full((64, 64), 200, np.uint8)))
    spec = {"box": "box=8,8,40,40", "mask": f"mask={mask_file}", "box3d": "box3d=0,0,3,1,1,1",
            "mask_depth": f"mask={mask_file},depth={depth_file}"}[placement]  # fmt: skip
    red, blue = _png(tmp_path, "r.png", solid("red")), _png(tmp_path, "b.png", solid("blue"))
    controls = ControlSpec(subjects=(f"{red}@{spec}", f"{blue}@box=30,30,60,60"), compose=True)
    req = build_request("a park", arch=tiny_pipe.arch, config=GenerationConfig(size=(64, 64)), controls=controls)
    assert req.model_text() == (
        "<subject>these subjects <identities> <layout>arranged like <spatial> Place these subjects to compose: a park"
    )
    res = tiny_pipe(req, steps=3, seed=0)
    assert res.image.size == (64, 64) and torch.isfinite(res.latents).all()
    spatial = next(img.image for img in req.images if img.role == "spatial")
    assert set(np.unique(np.asarray(spatial)[..., 0])) <= {0, 10, 20}  # the paper's step: the model stores none
    arch50 = tiny_pipe.arch.replace(routing_step=50)  # a model trained at step 50 gets its controls drawn so
    req50 = build_request("a park", arch=arch50, config=GenerationConfig(size=(64, 64)), controls=controls)
    spatial = next(img.image for img in req50.images if img.role == "spatial")
    assert set(np.unique(np.asarray(spatial)[..., 0])) == {0, 50, 100}
    sheet = next(img.image for img in req50.images if img.role == "identities")
    two_a_column = build_request("a park", arch=arch50.replace(sheet_rows=1), config=GenerationConfig(size=(64, 64)),
                                 controls=controls)  # fmt: skip
    side = next(img.image for img in two_a_column.images if img.role == "identities")
    assert side.width == 2 * side.height and sheet.height == 2 * sheet.width  # one cell a column: side by side


def test_subjects_keep_the_other_references(tiny_pipe, tmp_path):
    """A reference used as a subject leaves the sequence with its tokens; the others stay where they were."""
    cat, style = _png(tmp_path, "c.png", solid("red")), _png(tmp_path, "s.png", solid("blue"))
    controls = ControlSpec(subjects=("img1@box=0,0,0.5,0.5",))
    req = build_request("a <subject>cat <img1> in the <style>style of <img2>", {"img1": cat, "img2": style},
                        arch=tiny_pipe.arch, config=GenerationConfig(size=(64, 64)), controls=controls)  # fmt: skip
    assert req.model_text() == (
        "<subject>these subjects <identities> <layout>arranged like <spatial> "
        "Place these subjects in a cat in the <style>style of <img2>"
    )
    with pytest.raises(InputError, match="img3, which is not a given reference"):
        build_request("a", {"img1": cat}, arch=tiny_pipe.arch, controls=ControlSpec(subjects=("img3@box=0,0,1,1",)))


@pytest.mark.parametrize("kind", ["canny", "depth_map", "boxes"])
def test_layout_control_end_to_end(tiny_pipe, tmp_path, kind):
    src = _png(tmp_path, "src.png", Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 96, 3), np.uint8)))
    controls = {
        "canny": ControlSpec(canny=src, canny_blur=3),
        "depth_map": ControlSpec(depth_map=src),
        "boxes": ControlSpec(boxes=("0,0,48,64:dog",)),
    }[kind]
    ref = Image.new("RGB", (64, 64), "white")
    req = build_request("a <subject>dog <img1> on grass", [ref], arch=tiny_pipe.arch, controls=controls)
    control = req.images[-1]
    assert control.role == kind.split("_")[0] and req.parts[-1].attributes == ("<layout>",)
    assert req.model_text() == f"a <subject>dog <img1> on grass following <layout>this layout <{control.name}>"
    res = tiny_pipe(req, steps=3, seed=0)
    assert res.image.size == control.image.size  # the layout image is placed last: its size is the output's


def test_full_scene_depth_replaces_the_subject_only_structure(tiny_pipe, tmp_path):
    depth = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1))  # a left-to-right ramp over the scene
    reg = regions([Subject(solid("red"), box=Box(8, 8, 24, 24))], (64, 64), scene_depth=depth)
    assert np.array_equal(reg.structure, depth)  # outside the subject too
    Image.fromarray(depth).save(tmp_path / "scene.png")
    controls = ControlSpec(subjects=(f"{_png(tmp_path, 'r.png', solid('red'))}@box=8,8,24,24",),
                           scene_depth=str(tmp_path / "scene.png"))  # fmt: skip
    req = build_request("a park", arch=tiny_pipe.arch, config=GenerationConfig(size=(64, 64)), controls=controls)
    spatial = next(img.image for img in req.images if img.role == "spatial")
    assert np.array_equal(np.asarray(spatial)[..., 2], depth)
    with pytest.raises(InputError, match="--scene-depth is the structure of a subject layout"):
        ControlSpec(scene_depth="x.png")
