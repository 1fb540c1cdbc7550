"""Preprocessing against the spec's worked examples, and the fixed embeddings' reference values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sigma_studio.model.arch.layers import TimestepEmbedder, sincos_table_2d
from sigma_studio.model.config import ResizeSpec
from sigma_studio.model.errors import InputError
from sigma_studio.model.images import (
    grid_position_ids,
    open_image,
    patchify,
    resize_size,
    save_png,
    to_rgb,
    unpatchify,
)

VAE, VIT = ResizeSpec(1024, 512, 16), ResizeSpec(980, 224, 14)


@pytest.mark.parametrize(
    ("size", "vae", "vit"),
    [
        ((1024, 1024), (1024, 1024), (980, 980)),
        ((1024, 768), (1024, 768), (980, 728)),
        ((640, 480), (688, 512), (686, 518)),
        ((1920, 1080), (1024, 576), (980, 546)),
        ((500, 500), (512, 512), (518, 518)),
        ((3000, 500), (1024, 176), (980, 168)),
        ((800, 1200), (688, 1024), (658, 980)),
    ],
)
def test_resize_worked_examples(size, vae, vit):
    assert resize_size(*size, VAE) == vae
    assert resize_size(*vae, VIT) == vit


def test_patchify_layout_and_roundtrip():
    x = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(2, 4, 6)
    tokens = patchify(x, 2)
    assert tokens.shape == (6, 8)
    # token (row 0, col 1), feature (py=1, px=0, c=1) = x[1, 1, 2]
    assert tokens[1, (1 * 2 + 0) * 2 + 1] == x[1, 1, 2]
    torch.testing.assert_close(unpatchify(tokens, 2, 3, 2, 2), x)


def test_grid_ids():
    assert grid_position_ids(2, 3, 64).tolist() == [0, 1, 2, 64, 65, 66]
    with pytest.raises(InputError, match="exceeds"):
        grid_position_ids(65, 1, 64)


def test_sincos_table_reference_values():
    table = sincos_table_2d(64, 3584)
    assert table.shape == (4096, 3584)
    row0 = table[0]
    assert row0[:896].eq(0).all() and row0[896:1792].eq(1).all() and row0[1792:2688].eq(0).all()
    assert table[1, 0].item() == pytest.approx(0.841471, abs=1e-6)
    assert table[1, 896].item() == pytest.approx(0.540302, abs=1e-6)
    assert table[1, 1792].item() == 0


def test_timestep_sinusoid_at_zero():
    e = TimestepEmbedder(8).sinusoid(torch.zeros(1))
    assert e[0, :128].eq(1).all() and e[0, 128:].eq(0).all()


def test_rgba_composited_on_white():
    img = Image.new("RGBA", (2, 1), (255, 0, 0, 0))
    img.putpixel((1, 0), (0, 0, 255, 255))
    assert np.asarray(to_rgb(img)).tolist() == [[[255, 255, 255], [0, 0, 255]]]


def test_open_image_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        open_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError, match="not a readable image"):
        open_image(bad)
    bomb = tmp_path / "bomb.png"
    Image.new("1", (9000, 8000)).save(bomb)  # 72 megapixels that compress to a few kilobytes
    with pytest.raises(InputError, match="too large to decode safely"):
        open_image(bomb)


def test_open_image_takes_raster_formats_only(tmp_path):
    picture = Image.new("RGB", (8, 6), (200, 40, 40))
    for fmt in ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"):
        path = tmp_path / f"ref.{fmt.lower()}"
        picture.save(path, format=fmt)
        assert open_image(path).size == (8, 6)
    eps = tmp_path / "ref.png"  # PostScript under a picture's name: PIL would hand it to Ghostscript
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 6\nshowpage\n")
    with pytest.raises(InputError, match="not a readable image"):
        open_image(eps)


def test_save_png_is_atomic_and_keeps_metadata(tmp_path):
    out = save_png(Image.new("RGB", (4, 4)), tmp_path / "a" / "o.png", {"sigma:prompt": "hi"})
    assert Image.open(out).text["sigma:prompt"] == "hi"
    assert [p.name for p in out.parent.iterdir()] == ["o.png"]


def test_rope_frequencies_stay_float32_in_a_bf16_model():
    from sigma_studio.model.arch.layers import RotaryEmbedding

    rope = RotaryEmbedding(128, 1e6).to(torch.bfloat16)
    cos, _ = rope(torch.tensor([100]), torch.float32)
    exact = torch.cos(100 * (1.0 / 1e6 ** (torch.arange(0, 128, 2).double() / 128))).float()
    torch.testing.assert_close(cos[0, :64], exact, atol=1e-5, rtol=0)
