"""``sigma generate --from``: replays and variations of recorded outputs, and the ways a replay can go wrong."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from sigma_studio.cli.main import main
from sigma_studio.model import InputError, load_pipeline, read_record
from sigma_studio.model.weights.loader import save_pipeline

TINY = ["--model", "tiny", "--steps", "3"]


def sigma(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path))


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    for name, (w, h) in {"a.png": (64, 48), "b.png": (48, 64), "photo[draft].png": (32, 32)}.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / name)
    return tmp_path


def test_a_local_model_directory_replays_from_another_folder(capsys, work, monkeypatch):
    save_pipeline(load_pipeline("tiny"), work / "runs" / "mine")
    assert sigma(capsys, "generate", "a <img1>", "a.png", "--model", "runs/mine", "--steps", "3", "-o", "x.png")[0] == 0
    assert read_record(work / "x.png").model == str(work / "runs" / "mine")
    (work / "elsewhere").mkdir()
    monkeypatch.chdir(work / "elsewhere")
    assert sigma(capsys, "generate", "--from", work / "x.png", "-o", "y.png")[0] == 0
    assert np.array_equal(pixels(work / "x.png"), pixels("y.png"))


def test_changing_one_control_keeps_the_others(capsys, work):
    args = ["generate", "a <img1>", "a.png", "--canny", "b.png", "--canny-low", "30", "--box", "0,0,0.5,1", *TINY]
    assert sigma(capsys, *args, "-o", "c.png")[0] == 0
    assert sigma(capsys, "generate", "--from", "c.png", "--canny-high", "150", "-o", "d.png")[0] == 0
    controls = read_record(work / "d.png").controls
    assert controls["canny"].endswith("b.png") and controls["canny_low"] == 30 and controls["canny_high"] == 150
    assert controls["boxes"] == ["0,0,0.5,1"]
    (work / "b.png").rename(work / "moved.png")
    code, _, err = sigma(capsys, "generate", "--from", "c.png", "-o", "e.png")
    assert code == 2 and "recorded --canny file" in err and "pass --canny again" in err
    assert sigma(capsys, "generate", "--from", "c.png", "--canny", "moved.png", "-o", "e.png")[0] == 0
    assert np.array_equal(pixels(work / "c.png"), pixels(work / "e.png"))


def test_files_after_from_are_references_and_a_new_prompt_keeps_only_its_images(capsys, work):
    assert sigma(capsys, "generate", "x <img1> y <img2>", "a.png", "b.png", *TINY, "-o", "r.png")[0] == 0
    assert sigma(capsys, "generate", "--from", "r.png", "b.png", "a.png", "-o", "s.png")[0] == 0
    record = read_record(work / "s.png")
    assert record.prompt == "x <img1> y <img2>"
    assert [f.rsplit("/", 1)[1] for f in record.reference_files().values()] == ["b.png", "a.png"]
    assert sigma(capsys, "generate", "only <img2>", "--from", "r.png", "-o", "t.png")[0] == 0
    assert list(read_record(work / "t.png").reference_files()) == ["img2"]


def test_names_with_brackets_are_printed_as_written(capsys, work):
    code, out, err = sigma(capsys, "generate", "a <img1>", "photo[draft].png", *TINY, "-o", "res[red].png")
    assert code == 0 and "res[red].png" in out
    code, _, err = sigma(capsys, "generate", "a <img1>", "gone[/x].png", *TINY, "-o", "z.png")
    assert code == 2 and "gone[/x].png" in err and "Traceback" not in err


def test_replay_errors(capsys, work):
    info = PngImagePlugin.PngInfo()
    info.add_text("sigma:prompt", "a cat")
    Image.new("RGB", (8, 8)).save(work / "old.png", pnginfo=info)
    code, _, err = sigma(capsys, "generate", "--from", "old.png")
    assert code == 2 and "older SIGMA Studio" in err
    code, _, err = sigma(capsys, "generate", "a cat", "--canny-low", "20", *TINY)
    assert code == 2 and "give --canny IMAGE too" in err
    assert not list(work.glob("outputs/*.png"))


def test_webui_refuses_an_outputs_file_before_loading(capsys, work):
    (work / "afile").write_text("x")
    code, _, err = sigma(capsys, "webui", "--model", "tiny", "--outputs", "afile")
    assert code == 2 and "afile is a file" in err and len(err.strip().splitlines()) == 1


def test_api_names_the_nearest_argument(tiny_pipe):
    with pytest.raises(InputError, match="did you mean images"):
        tiny_pipe("a cat", imgaes=[])
    with pytest.raises(InputError, match="size is fixed"):
        from sigma_studio.model import build_request

        tiny_pipe(build_request("a cat", arch=tiny_pipe.arch), size=(64, 64))


def test_speed_fast_is_recorded_and_replayed(capsys, work):
    code, _, err = sigma(capsys, "generate", "a <img1>", "a.png", *TINY, "--speed", "fast", "-o", "f.png")
    assert code == 0, err
    from sigma_studio.model.config import SPEEDS

    assert read_record(work / "f.png").config["guidance_every"] == SPEEDS["fast"]
    assert sigma(capsys, "generate", "--from", "f.png", "-o", "g.png")[0] == 0
    assert np.array_equal(pixels(work / "f.png"), pixels(work / "g.png"))
    code, _, err = sigma(capsys, "generate", "a cat", *TINY, "--speed", "warp")
    assert code == 2 and "--speed warp is not one of exact, fast" in err
