"""What a model was trained to read (ArchConfig.skills) against what a request asks of it: a request that needs
a skill the loaded model lacks is warned in the request, the record (so every API's answer), and the CLI."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from sigma_studio.cli.main import main
from sigma_studio.model import CheckpointError, ControlSpec, build_request, load_pipeline, read_arch_config
from sigma_studio.model.config import SKILLS
from sigma_studio.model.presets import bagel_7b_mot, shapes, sigma_7b, tiny
from sigma_studio.model.request.skills import needed_skills, skill_warnings
from sigma_studio.model.weights.loader import save_pipeline
from tests.test_hub import fake_hub, tiny_dir  # noqa: F401  (fixtures)

RED = Image.new("RGB", (64, 64), (220, 40, 40))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("skills")
    for name, colour in (("red", (220, 40, 40)), ("grey", (200, 200, 200))):
        Image.new("RGB", (64, 64), colour).save(root / f"{name}.png")
    return root


def test_the_released_models_and_the_shapes_model_say_what_they_read():
    assert set(sigma_7b().skills) == {"attribute_tokens", "boxes", "canny", "depth"}
    assert bagel_7b_mot().skills == ()
    assert tiny().skills is None  # random weights: nothing to warn about
    assert load_pipeline("shapes").arch.skills == shapes().skills == ("attribute_tokens", "boxes", "subjects")
    assert set(shapes().skills) <= set(SKILLS)


def test_needed_skills_follow_the_prompt_and_the_controls(files):
    parts = build_request("a <subject>star <img1>", [RED], arch=tiny()).parts
    assert needed_skills(parts, ControlSpec()) == ["attribute_tokens"]
    spec = ControlSpec(canny=str(files / "red.png"), depth_map=str(files / "grey.png"))
    assert needed_skills((), spec) == ["canny", "depth"]
    assert needed_skills((), ControlSpec(boxes=("0,0,0.5,0.5",))) == ["boxes"]
    subject = ControlSpec(subjects=(f"{files / 'red.png'}@box=0,0,0.5,0.5",), boxes=())
    assert needed_skills((), subject) == ["subjects"]


def test_a_request_beyond_the_model_is_warned_and_recorded(files):
    subject = ControlSpec(subjects=(f"{files / 'red.png'}@box=0.1,0.5,0.5,0.9",))
    no_subjects = shapes().replace(skills=("attribute_tokens", "boxes"))  # a shapes model trained on SIGMA alone
    request = build_request("a grey picture", arch=no_subjects, controls=subject)
    assert len(request.warnings) == 1 and "SIGMA-GEN subjects" in request.warnings[0]
    assert "it reads: SIGMA's attribute tokens, box layouts" in request.warnings[0]
    on_bagel = build_request("a <style>look <img1>", [RED], arch=bagel_7b_mot())
    assert ["attribute tokens" in w for w in on_bagel.warnings] == [True]
    assert not build_request("a <style>look <img1>", [RED], arch=sigma_7b()).warnings
    assert not build_request("a <style>look <img1>", [RED], arch=tiny(), controls=subject).warnings
    result = load_pipeline("shapes")(request.replace(config=request.config.replace(steps=2, seed=0)))
    assert result.record.warnings == request.warnings  # the PNG, --json, and every API answer carry them


def test_skills_round_trip_through_a_model_directory(tmp_path, tiny_pipe):
    pipe = load_pipeline("tiny")
    pipe.model.cfg = pipe.arch.replace(skills=("canny",))
    folder = save_pipeline(pipe, tmp_path / "m")
    assert read_arch_config(folder).skills == ("canny",)
    config = json.loads((folder / "sigma_config.json").read_text())
    config["arch"]["skills"] = ["telepathy"]
    (folder / "sigma_config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="telepathy"):
        read_arch_config(folder)


def test_the_released_sources_get_their_preset_skills(fake_hub):  # noqa: F811
    assert load_pipeline("sigma", mode="cpu").arch.skills == sigma_7b().skills
    assert load_pipeline("bagel", mode="cpu").arch.skills == ()


def test_the_cli_prints_the_warning(files, tmp_path, capsys):
    out = tmp_path / "o.png"
    with pytest.raises(SystemExit) as stop:
        main(["generate", "a red star", "--canny", str(files / "red.png"), "--model", "shapes", "--steps", "2",
              "--seed", "0", "--out", str(out), "--json"])  # fmt: skip
    captured = capsys.readouterr()
    assert stop.value.code == 0, captured.err
    assert "not trained to read Canny-edge layouts" in captured.err
    assert any("Canny-edge layouts" in w for w in json.loads(captured.out)["warnings"])


def test_a_model_of_unknown_skills_is_never_warned_about():
    assert skill_warnings(tiny(), (), ControlSpec(boxes=("0,0,1,1",))) == []


def test_the_web_page_marks_the_tabs_the_model_cannot_use(tmp_path):
    """The shapes model reads box layouts and SIGMA-GEN subjects, not Canny or depth: those tabs say so at the top;
    a model of unknown skills (tiny) gets no note."""
    from sigma_studio.webui.blocks import build_demo

    def notes(pipe) -> list[str]:
        config = build_demo(pipe, outputs=tmp_path / pipe.name).get_config_file()
        return [c["props"]["value"] for c in config["components"]
                if "untrained" in (c["props"].get("elem_classes") or [])]  # fmt: skip

    shapes_notes = notes(load_pipeline("shapes"))
    assert len(shapes_notes) == 2  # the Boxes tab (boxes and subjects) has no note
    assert "Canny-edge layouts" in shapes_notes[0] and "depth layouts" in shapes_notes[1]
    sigma_only = load_pipeline("shapes")
    sigma_only.model.cfg = sigma_only.arch.replace(skills=("attribute_tokens", "boxes"))  # trained without SIGMA-GEN
    assert "SIGMA-GEN subjects" in notes(sigma_only)[2] and "box layouts" not in notes(sigma_only)[2]
    assert notes(load_pipeline("tiny")) == []
