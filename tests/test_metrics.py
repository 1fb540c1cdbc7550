"""The ``sigma eval`` metrics on tiny random models built from configs (no download anywhere), small pictures of
the shapes world and synthetic ones, and the offline path.

Run: ``OMP_NUM_THREADS=1 pytest tests/test_metrics.py``.
"""

from __future__ import annotations

import math
import sys
import types
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sigma_studio.model.errors import InputError
from sigma_studio.model.evaluation import METRICS, EvalRow, available_metrics, build_metrics
from sigma_studio.model.evaluation.base import WHOLE_IMAGE, SubjectRegion, text_prompt, unit_tensor
from sigma_studio.model.evaluation.pixel import PSNR_CAP, edge_f1_value, is_edge_map
from sigma_studio.model.request.control import Box, canny_edges, depth_to_image, render_boxes
from sigma_studio.model.shapes.world import GREY, Thing, centred, render

WORDS = "a red green blue circle square star draw the shape in colour of good bad photo .".split()
SPECIALS = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            vocab_size=len(SPECIALS) + len(WORDS), max_position_embeddings=16,
            pad_token_id=0, bos_token_id=1, eos_token_id=2)  # fmt: skip
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
              patch_size=8)  # fmt: skip
SUBJECT_METRICS = ("dinov2_subjects", "siglip_i_subjects", "clip_i_subjects", "depth_mse_subjects")
MODEL_METRICS = ["clip_t", "clip_i", "dino", "dreamsim", "dinov2", "siglip_i", "siglip_t", "clip_iqa", "musiq",
                 "depth_mse", *SUBJECT_METRICS]  # fmt: skip


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", 1), ("[EOS]", 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]", unk_token="[UNK]"
    )


class TinyDreamSim(torch.nn.Module):
    """DreamSim's interface (``embed``) on a random convolution."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)

    def embed(self, pixels):
        return self.conv(pixels).mean((2, 3))


def build_tiny(kind: str):
    import transformers as tf

    torch.manual_seed(0)
    square = {"height": 32, "width": 32}
    if kind == "clip":
        processor = tf.CLIPProcessor(
            image_processor=tf.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=square),
            tokenizer=tiny_tokenizer(),
        )
        return tf.CLIPModel(tf.CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=16)), processor
    if kind == "siglip":
        processor = tf.SiglipProcessor(image_processor=tf.SiglipImageProcessor(size=square), tokenizer=tiny_tokenizer())
        return tf.SiglipModel(tf.SiglipConfig(text_config=TEXT, vision_config=VISION)), processor
    if kind == "dino":
        model = tf.ViTModel(tf.ViTConfig(**VISION), add_pooling_layer=False)
        return model, tf.ViTImageProcessor(size=square)
    if kind == "dinov2":
        processor = tf.BitImageProcessor(size={"shortest_edge": 32}, crop_size=square)
        return tf.Dinov2Model(tf.Dinov2Config(**VISION)), processor
    if kind == "depth":  # brightness as depth: enough to check the plumbing
        return (lambda img: img.convert("L")), None
    if kind == "dreamsim":
        return TinyDreamSim(), lambda img: unit_tensor(img.resize((32, 32)))[None]
    if kind == "musiq":
        return (lambda pixels: pixels.mean() * 100), None
    raise AssertionError(kind)


@pytest.fixture(scope="module")
def tiny_loader():
    cache: dict = {}
    calls: list[str] = []

    def load(kind, model_id):
        calls.append(kind)
        if kind not in cache:
            cache[kind] = build_tiny(kind)
        return cache[kind]

    load.calls = calls
    return load


@pytest.fixture(scope="module")
def all_metrics(tiny_loader):
    ready, messages = build_metrics(available_metrics(), loader=tiny_loader)
    assert messages == []
    return {m.name: m for m in ready}


def noise(size, seed):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


RED_CIRCLE = render([centred("circle", "red", 30)])
BLUE_STAR = render([Thing("star", "blue", (6.0, 8.0, 26.0, 26.0))])
BLANK = Image.new("RGB", (64, 64), GREY)


def row(output, target=None, prompt="a red circle", references=(), layout=None, family="compose", row_id="r",
        subjects=None):  # fmt: skip
    return EvalRow(row_id, family, output, target, prompt, tuple(references), layout, subjects)


def box_mask(size, box) -> np.ndarray:
    """A bool [H, W] mask of ``size`` (width, height), True inside ``box`` (x0, y0, x1, y1)."""
    mask = np.zeros(size[::-1], dtype=bool)
    mask[box[1] : box[3], box[0] : box[2]] = True
    return mask


def mixed_rows():
    """Rows of different sizes, with and without target, references, layout, prompt text and SIGMA-GEN subjects
    (the first row has two, one of them not shown by its control)."""
    subjects = (SubjectRegion("red circle", box_mask((64, 64), (17, 17, 47, 47))),
                SubjectRegion("hidden", np.zeros((64, 64), dtype=bool)))  # fmt: skip
    return [
        row(RED_CIRCLE, RED_CIRCLE, layout=canny_edges(RED_CIRCLE), row_id="same", subjects=subjects),
        row(noise((48, 40), 1), noise((40, 56), 2), prompt="Draw the <subject>shape <img1>", references=[BLUE_STAR]),
        row(BLUE_STAR, None, prompt="<img1> <img2>", references=[noise((80, 56), 3), RED_CIRCLE], layout=BLUE_STAR),
        row(noise((96, 72), 4), None, prompt="a blue star", family=""),
    ]


def test_registry_and_descriptions(all_metrics):
    assert list(all_metrics) == available_metrics() == list(METRICS)
    for name, metric in all_metrics.items():
        assert metric.name == name and metric.label and metric.mirrors and "\n" not in metric.mirrors
        assert (metric.model is None) == (name in ("shapes", "shapes_strict", "psnr", "ssim", "edge_f1"))
        per_subject = name in SUBJECT_METRICS
        assert (metric.protocol != WHOLE_IMAGE) == per_subject == (metric.score_subjects is not None), name
        assert not per_subject or metric.protocol.startswith("per-subject") and "SIGMA-GEN §4" in metric.protocol
    assert not all_metrics["dreamsim"].higher_is_better and not all_metrics["depth_mse"].higher_is_better


def test_text_prompt_strips_tokens_and_placeholders():
    prompt = "Draw the <subject>shape <img1> in the <style>colour of <image 2>."
    assert text_prompt(prompt) == "Draw the shape in the colour of ."
    assert text_prompt("<img1><img_2>") == ""


def test_every_metric_gives_one_finite_value_per_row(all_metrics):
    rows = mixed_rows()
    for name, metric in all_metrics.items():
        values = metric.compute(rows)
        assert len(values) == len(rows), name
        assert all(v is None or math.isfinite(v) for v in values), (name, values)
        assert values[0] is not None, name  # the first row has everything
    assert metric.compute([]) == []


def test_not_applicable_rows_are_none(all_metrics):
    rows = mixed_rows()
    for name in ("shapes", "psnr", "ssim", "depth_mse"):  # no target in rows 2 and 3
        assert all_metrics[name].compute(rows)[2:] == [None, None], name
    assert all_metrics["edge_f1"].compute(rows)[1] is None  # no layout
    assert all_metrics["clip_t"].compute(rows)[2] is None  # no text in the prompt
    assert all_metrics["clip_i"].compute(rows)[3] is None  # neither target nor references
    for name in SUBJECT_METRICS:  # only the first row has SIGMA-GEN subjects
        assert all_metrics[name].compute(rows)[1:] == [None, None, None], name
        assert all_metrics[name].compute_all(rows)[1][0][1] is None, name  # its control does not show subject 2


def test_batches_of_different_sizes_match_row_by_row(all_metrics):
    rows = mixed_rows()
    for name, metric in all_metrics.items():
        together = metric.compute(rows)
        alone = [metric.compute([r])[0] for r in rows]
        for a, b in zip(together, alone, strict=True):
            assert (a is None) == (b is None) and (a is None or a == pytest.approx(b, abs=1e-4)), name


@pytest.mark.parametrize("name", ["clip_i", "dino", "dinov2", "siglip_i"])
def test_identical_images_have_cosine_one(all_metrics, name):
    picture = noise((50, 70), 5)
    same, refs = row(picture, picture), row(picture, None, references=[picture, picture])
    assert all_metrics[name].compute([same, refs]) == [pytest.approx(1.0, abs=1e-5)] * 2
    assert all_metrics[name].compute([row(picture, noise((50, 70), 6))])[0] < 1.0 - 1e-4


def test_identical_images_pixel_and_distance_metrics(all_metrics):
    picture = noise((40, 40), 7)
    rows = [row(picture, picture), row(picture, noise((40, 40), 8))]
    assert all_metrics["psnr"].compute(rows)[0] == PSNR_CAP and all_metrics["psnr"].compute(rows)[1] < 20
    assert all_metrics["ssim"].compute(rows)[0] == pytest.approx(1.0) and all_metrics["ssim"].compute(rows)[1] < 0.5
    assert all_metrics["dreamsim"].compute(rows)[0] == pytest.approx(0.0, abs=1e-5)
    assert all_metrics["dreamsim"].compute(rows)[1] > 1e-4
    assert (
        all_metrics["depth_mse"].compute(rows)[0] == pytest.approx(0.0)
        and all_metrics["depth_mse"].compute(rows)[1] > 0
    )


def test_text_metrics_are_cosines_and_clip_iqa_a_probability(all_metrics):
    rows = mixed_rows()
    for name in ("clip_t", "siglip_t"):
        assert all(-1.0 <= v <= 1.0 for v in all_metrics[name].compute(rows) if v is not None), name
    assert all(0.0 <= v <= 1.0 for v in all_metrics["clip_iqa"].compute(rows))


def test_shapes_reads_the_world(all_metrics):
    shapes, strict = all_metrics["shapes"], all_metrics["shapes_strict"]
    moved = render([Thing("circle", "red", (1.0, 1.0, 26.0, 26.0))])  # centroid (14, 14): outside the target box
    rows = [row(RED_CIRCLE, RED_CIRCLE), row(BLANK, RED_CIRCLE), row(BLUE_STAR, RED_CIRCLE), row(moved, RED_CIRCLE)]
    assert shapes.compute(rows) == [1.0, 0.0, 0.0, 0.0]  # compose: shape, colour and place (issue 21's reader)
    assert strict.compute(rows) == [1.0, 0.0, 0.0, 0.0]  # strict: the box must fit too
    layout_rows = [row(RED_CIRCLE, RED_CIRCLE, family="layout"), row(moved, RED_CIRCLE, family="layout")]
    assert shapes.compute(layout_rows) == [1.0, 0.0]  # layout: the centroid inside the target's box
    assert shapes.compute([row(BLANK, BLANK), row(RED_CIRCLE, BLANK)]) == [1.0, 0.0]
    assert shapes.compute([row(RED_CIRCLE.resize((128, 128)), RED_CIRCLE)]) == [1.0]  # read at the target's size


def test_edge_f1_against_the_layout():
    edges = canny_edges(BLUE_STAR)
    assert is_edge_map(edges)
    assert not is_edge_map(BLUE_STAR) and not is_edge_map(render_boxes([Box(4, 4, 40, 40)], (64, 64)))
    assert not is_edge_map(depth_to_image(np.tile(np.linspace(0, 1, 64), (64, 1))))
    assert edge_f1_value(BLUE_STAR, edges) == 1.0  # a canny control: its own lines
    assert edge_f1_value(BLUE_STAR, BLUE_STAR) == 1.0  # any other control: Canny of it
    assert edge_f1_value(BLUE_STAR.resize((128, 128)), edges) > 0.8  # read at the layout's size
    assert edge_f1_value(BLANK, edges) == 0.0 and edge_f1_value(BLANK, Image.new("RGB", (64, 64))) == 1.0
    assert 0.0 < edge_f1_value(RED_CIRCLE, edges) < 1.0


def test_a_model_is_loaded_once_for_all_its_metrics(tiny_loader):
    before = len(tiny_loader.calls)
    ready, _ = build_metrics(["clip_t", "clip_i", "clip_iqa", "psnr"], loader=tiny_loader)
    assert [m.name for m in ready] == ["clip_t", "clip_i", "clip_iqa", "psnr"]
    assert tiny_loader.calls[before:] == ["clip"]


def test_unknown_metric():
    with pytest.raises(InputError, match="Unknown metric 'fid'.*clip_t"):
        build_metrics(["psnr", "fid"])


def test_offline_model_is_one_line_and_the_others_run(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    ready, messages = build_metrics(["clip_t", "psnr"])
    assert [m.name for m in ready] == ["psnr"]
    assert len(messages) == 1 and "\n" not in messages[0]
    line = messages[0]
    assert line.startswith("clip_t: ") and "openai/clip-vit-large-patch14" in line and "hf download" in line
    assert ready[0].compute([row(RED_CIRCLE, RED_CIRCLE)]) == [PSNR_CAP]


def test_missing_packages_are_one_line_each(monkeypatch):
    monkeypatch.setitem(sys.modules, "dreamsim", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "pyiqa", None)
    ready, messages = build_metrics(["dreamsim", "musiq", "ssim"])
    assert [m.name for m in ready] == ["ssim"]
    assert messages == [
        "dreamsim: The dreamsim metric needs the 'dreamsim' package: pip install 'sigma-studio[eval]'",
        "musiq: The musiq metric needs the 'pyiqa' package: pip install pyiqa",
    ]


def test_a_broken_package_install_is_one_line(tmp_path, monkeypatch):
    """A dreamsim whose torchvision was built for another torch fails at import with a RuntimeError."""
    (tmp_path / "dreamsim").mkdir()
    (tmp_path / "dreamsim" / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "dreamsim", raising=False)
    ready, messages = build_metrics(["dreamsim"])
    assert ready == [] and len(messages) == 1
    assert "RuntimeError: operator torchvision::nms does not exist" in messages[0] and "torchvision" in messages[0]


def _fake_module(monkeypatch, name: str, **attrs):
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    monkeypatch.setitem(sys.modules, name, module)


def test_dreamsim_weights_missing_offline_or_unreachable(tmp_path, monkeypatch):
    def unreachable(**kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    _fake_module(monkeypatch, "dreamsim", dreamsim=unreachable)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _, [line] = build_metrics(["dreamsim"], cache_dir=str(tmp_path))
    assert line.startswith("dreamsim: DreamSim (ensemble): not in ") and str(tmp_path / "dreamsim") in line
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    _, [line] = build_metrics(["dreamsim"], cache_dir=str(tmp_path))
    assert "does not load (<urlopen error [Errno -3]" in line and "where there is network access" in line


def test_pyiqa_weights_unreachable(monkeypatch):
    def create_metric(name, **kwargs):
        raise OSError("Network is unreachable")

    _fake_module(monkeypatch, "pyiqa", create_metric=create_metric)
    _, [line] = build_metrics(["musiq"])
    assert line.startswith("musiq: pyiqa's musiq does not load (Network is unreachable)")


def _cached(cache: Path, repo: str, kind: str, legacy: bool = False) -> None:
    """A tiny model saved in the layout of a Hugging Face cache, as `hf download` leaves it."""
    snap = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / "0123abc"
    model, processor = build_tiny(kind)
    model.save_pretrained(snap)
    processor.save_pretrained(snap)
    if legacy:  # an older repository: pytorch_model.bin only
        (snap / "model.safetensors").unlink()
        torch.save(model.state_dict(), snap / "pytorch_model.bin")
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("0123abc")


def test_hub_models_load_from_the_cache_offline(tmp_path, monkeypatch):
    """The real loading path (snapshot -> from_pretrained -> AutoProcessor) on tiny models in a cache folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _cached(tmp_path, "openai/clip-vit-large-patch14", "clip")
    _cached(tmp_path, "google/siglip-so400m-patch14-384", "siglip")
    _cached(tmp_path, "facebook/dino-vits16", "dino", legacy=True)
    _cached(tmp_path, "facebook/dinov2-small", "dinov2")
    names = ["clip_t", "clip_i", "clip_iqa", "siglip_t", "siglip_i", "dino", "dinov2"]
    ready, messages = build_metrics(names, cache_dir=str(tmp_path))
    assert messages == [] and [m.name for m in ready] == names
    picture = noise((40, 30), 9)
    for metric in ready:
        [value] = metric.compute([row(picture, picture, prompt="a <subject>red circle <img1>")])
        assert math.isfinite(value), metric.name
        if metric.name in ("clip_i", "siglip_i", "dino", "dinov2"):
            assert value == pytest.approx(1.0, abs=1e-5), metric.name
