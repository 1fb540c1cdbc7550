"""examples/shapes_flow_read.py: the clean picture the model predicts at each step of a generation, rebuilt from the
sampler's own velocities."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from sigma_studio.model import load_pipeline
from sigma_studio.model.config import GenerationConfig
from sigma_studio.model.data.batch import row_prompt
from sigma_studio.model.data.dataset import SigmaRow
from sigma_studio.model.run import sampler
from sigma_studio.model.shapes.tasks import make_world

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "shapes_flow_read.py"
sys.path.insert(0, str(SCRIPT.parent))
from shapes_flow_read import AT, clean_predictions, read_row  # noqa: E402


@pytest.fixture(scope="module")
def row(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    make_world(out, rows=10, eval_rows=2, seed=3)
    return pq.read_table(out / "eval" / "select.parquet").to_pylist()[0]


def test_the_last_prediction_is_the_picture_and_the_first_state_is_the_noise(row):
    pipe, cfg = load_pipeline("shapes"), GenerationConfig()
    combine = sampler.combine
    pictures, start, result = clean_predictions(pipe, "select", 0, row, cfg)
    assert sampler.combine is combine and "decode" not in vars(pipe)  # both restored
    assert set(pictures) == set(AT)
    last = np.asarray(pictures[AT[-1]], dtype=np.float32)
    assert np.abs(last - np.asarray(result.image, dtype=np.float32)).mean() < 8  # t = 0.06: nearly the picture
    assert abs(float(start.std()) - 1) < 0.2  # the rebuilt start is unit noise, not a picture
    row_ = SigmaRow("r", row["instruction_list"][0][0], tuple(row["image_list"]))
    images = row_.decode_images()
    again = pipe(row_prompt(row_, len(images)), images[:-1], config=cfg.replace(seed=0), latents=start)
    diff = np.abs(np.asarray(again.image, dtype=np.float32) - np.asarray(result.image, dtype=np.float32))
    assert diff.max() <= 2  # started again from the rebuilt state: the same picture, to float rounding
    verdicts = read_row(pipe, "select", 0, row, cfg)
    assert set(verdicts) == {*AT, "final"} and {"ok", "shape", "colour", "placed"} <= set(verdicts["final"])
