"""Option groups (sigma_cli/groups.py): a dataclass of Typer options declared once and taken whole by commands."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from sigma_studio.cli.groups import grouped
from sigma_studio.cli.options import ControlOptions, LoadOptions, SamplerOptions
from sigma_studio.model import GenerationConfig
from sigma_studio.model.config import DEFAULT_MODEL, SPEEDS


@dataclass(frozen=True)
class Knobs:
    level: Annotated[int, typer.Option(help="how much")] = 3
    name: Annotated[str | None, typer.Option(help="which")] = None


def test_a_group_expands_into_options_and_comes_back_whole():
    seen = []

    @grouped
    def command(*, out: Annotated[str, typer.Option()], knobs: Knobs, debug: bool = False):
        seen.append((out, knobs, debug))

    assert list(inspect.signature(command).parameters) == ["out", "level", "name", "debug"]
    app = typer.Typer()
    app.command()(command)
    app.command("other")(lambda: None)
    result = CliRunner().invoke(app, ["command", "--out", "x", "--level", "5"])
    assert result.exit_code == 0, result.output
    assert seen[-1] == ("x", Knobs(level=5), False)
    command(out="y")  # a Python caller may leave options out: the dataclass defaults stand
    assert seen[-1] == ("y", Knobs(), False)


def test_an_option_declared_twice_is_refused():
    with pytest.raises(TypeError, match="level"):

        @grouped
        def command(*, level: int = 1, knobs: Knobs):
            pass


def test_the_shared_groups_map_onto_the_model_configs():
    config = SamplerOptions(steps=7, speed="fast", cfg_interval="0.2,0.9").config(seed=3, size="96x64")
    assert config == GenerationConfig(steps=7, guidance_every=SPEEDS["fast"], cfg_interval=(0.2, 0.9), seed=3,
                                      size=(64, 96))  # fmt: skip
    assert LoadOptions().loader_config().model == DEFAULT_MODEL
    assert LoadOptions().loader_config("shapes").model == "shapes"  # a --from record's model, when no --model
    assert ControlOptions(box=["0,0,1,1"], canny=None).given(compose=False) == {"boxes": ["0,0,1,1"]}


def test_the_python_api_takes_speed_like_the_cli():
    assert GenerationConfig().replace(speed="fast").guidance_every == SPEEDS["fast"]
    from sigma_studio.model import InputError

    with pytest.raises(InputError, match="speed warp is not one of"):
        GenerationConfig().replace(speed="warp")
    with pytest.raises(InputError, match="not both"):
        GenerationConfig().replace(speed="fast", guidance_every=2)


def test_the_pipeline_takes_speed_as_a_setting(tiny_pipe):
    fast = tiny_pipe("a cat", steps=8, seed=0, speed="fast")
    every = tiny_pipe("a cat", steps=8, seed=0, guidance_every=SPEEDS["fast"])
    assert fast.record.config["guidance_every"] == SPEEDS["fast"]
    assert fast.image.tobytes() == every.image.tobytes()
