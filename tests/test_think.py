"""Think mode (model.run.think): a training instruction's trailing plan, its cross-entropy, the greedy plan written
at inference into the full context only, and the ``--think`` option through the request, the record and the CLI."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from sigma_studio.cli.main import main
from sigma_studio.finetune.data import DropConfig, build_sample
from sigma_studio.finetune.packing import pack
from sigma_studio.model import build_request, load_pipeline
from sigma_studio.model.config import GenerationConfig
from sigma_studio.model.data.dataset import SigmaRow, iter_rows, parquet_files
from sigma_studio.model.errors import InputError, PromptError
from sigma_studio.model.presets import shapes, tiny
from sigma_studio.model.request.prompt import InterleavedPrompt, TextPart, parse_training_instruction, split_plan
from sigma_studio.model.request.record import GenerationRecord
from sigma_studio.model.run import think as think_mode
from sigma_studio.model.run.engine import prefill
from sigma_studio.model.shapes.tasks import examples, make_world, plan_of
from sigma_studio.model.shapes.vocab import build_tokenizer
from sigma_studio.model.shapes.world import COLOURS

PLANNED = "Draw only <select>the star <image_1>. <think>a red star</think>"


def _png(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buf, format="PNG")
    return buf.getvalue()


def test_a_trailing_plan_is_its_own_part_right_before_the_target():
    assert split_plan(PLANNED) == ("Draw only <select>the star <image_1>.", "a red star")
    assert split_plan("a red star") == ("a red star", None)
    parsed = parse_training_instruction(PLANNED, 2)
    kinds = [(type(p).__name__, getattr(p, "text", getattr(p, "index", None))) for p in parsed.parts]
    assert kinds == [("TextPart", "Draw only <select>the star"), ("ImagePart", 0), ("TextPart", "."),
                     ("TextPart", "a red star"), ("ImagePart", 1)]  # fmt: skip
    assert [p.plan for p in parsed.parts if isinstance(p, TextPart)] == [False, False, True]
    assert parsed.target_index == 4
    plain = parse_training_instruction("Draw only <select>the star <image_1>.", 2)
    assert not any(isinstance(p, TextPart) and p.plan for p in plain.parts)
    with pytest.raises(PromptError, match="plan is empty"):
        parse_training_instruction("a star <think> </think>", 1)
    with pytest.raises(PromptError, match="comes before the target"):
        parse_training_instruction("edit <image_1> into <image_2> <think>a star</think>", 2)


def test_a_plan_is_trained_with_cross_entropy_and_never_dropped():
    arch, tok = shapes(), build_tokenizer()
    row = SigmaRow("select-000000", PLANNED, (_png((200, 200, 200)), _png((220, 40, 40))))
    everything_dropped = DropConfig(text=1.0, vae=0.0, vit=0.0)
    sample = build_sample(row, arch, tok, torch.Generator().manual_seed(0), everything_dropped)
    texts = [b for b in sample.plan.blocks if b.kind == "text"]
    assert [b.plan for b in texts] == [True]  # the instruction's words dropped, the plan kept
    assert texts[0].token_ids == (tok.ids.bos, *tok.encode("a red star"), tok.ids.eos)
    batch = pack([sample], arch, tok.ids)  # no --text-loss: the plan's words are the only ones under cross-entropy
    assert batch.packed_label_ids.tolist() == [*tok.encode("a red star"), tok.ids.eos]
    plain = SigmaRow("select-000001", "Draw only <select>the star <image_1>.", row.images)
    plain_sample = build_sample(plain, arch, tok, torch.Generator().manual_seed(0), DropConfig(0, 0, 0))
    assert pack([plain_sample], arch, tok.ids).ce_loss_indexes.numel() == 0


def test_the_world_writes_plans_on_training_rows_only(tmp_path):
    make_world(tmp_path, rows=40, eval_rows=2, seed=1, plans=("select", "background"))
    assert json.loads((tmp_path / "world.json").read_text())["plans"] == ["select", "background"]
    for family, planned in (("select", True), ("background", True), ("compose", False)):
        for rec in pq.read_table(tmp_path / "train" / f"{family}.parquet").to_pylist():
            meta, instruction = json.loads(rec["meta"]), rec["instruction_list"][0][0]
            assert instruction.endswith("</think>") == planned
            if planned:
                plan = split_plan(instruction)[1]
                assert plan.startswith(f"the {meta['shape']} is {meta['colour']}")
                assert (" on " in plan) == (family == "background")
        for rec in pq.read_table(tmp_path / "eval" / f"{family}.parquet").to_pylist():
            assert "<think>" not in rec["instruction_list"][0][0]  # the model writes its own
    rows = list(iter_rows(parquet_files(str(tmp_path / "train"))))
    assert all(r.readable() for r in rows)
    with pytest.raises(InputError, match="plans for selct"):
        make_world(tmp_path / "bad", rows=10, plans=("selct",))
    example = next(examples("background", "train", 1, 0))
    assert plan_of(example) == f"the {example.meta['shape']} is {example.meta['colour']} on " + next(
        name for name, rgb in COLOURS.items() if list(rgb) == example.meta["background"]
    )


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("tiny")


def test_the_plan_written_token_by_token_is_the_block_the_prompt_then_holds(pipe):
    request = build_request("a red star", arch=pipe.arch, config=GenerationConfig(steps=2, seed=0))
    prepared = [pipe.prepare_image(img.image, "trained") for img in request.images]
    plans = pipe.plan(InterleavedPrompt(request.parts), prepared, "trained")
    inputs = pipe.encode_references(plans, prepared, torch.Generator().manual_seed(0))
    ids = pipe.tokenizer.ids
    context = prefill(pipe.model, plans.full, inputs, ids, device=pipe.device, query_tokens=6)
    written = think_mode.write_plan(pipe.model, context, ids, pipe.device, max_tokens=6)
    assert 0 <= len(written) <= 5 and context.cache.length == plans.full.length  # the cache is as it was
    extended = think_mode.with_plan(plans, written, ids)
    block = extended.full.blocks[-1]
    assert block.plan and block.token_ids == (ids.bos, *written, ids.eos) and block.rope == plans.full.next_rope
    assert extended.text_dropped is plans.text_dropped and extended.image_dropped is plans.image_dropped
    again = prefill(pipe.model, extended.full, inputs, ids, device=pipe.device, query_tokens=0)
    start, n = plans.full.length, len(written) + 1  # <|im_start|> and the plan's words, as decoding wrote them
    rows = slice(start, start + n)
    for layer in range(pipe.arch.llm.num_layers):
        torch.testing.assert_close(context.cache.k[layer][:, rows], again.cache.k[layer][:, rows])
        torch.testing.assert_close(context.cache.v[layer][:, rows], again.cache.v[layer][:, rows])


def test_think_mode_through_the_pipeline_the_record_and_the_skills(pipe, monkeypatch):
    monkeypatch.setattr(think_mode, "MAX_PLAN_TOKENS", 5)
    plain = pipe("a red star", steps=2, seed=0)
    assert plain.plan is None and plain.record.plan is None
    planned = pipe("a red star", steps=2, seed=0, think=True)
    assert isinstance(planned.plan, str) and planned.record.plan == planned.plan
    assert planned.plans.full.blocks[-1].plan and planned.plans.full.length > plain.plans.full.length
    assert GenerationRecord.from_json(json.loads(json.dumps(planned.record.to_json()))).plan == planned.plan
    assert planned.record.generation_config().think is True  # a replay thinks again
    with pytest.raises(InputError, match="--think is on or off"):
        GenerationConfig(think="yes")
    with pytest.raises(InputError, match="plan must be a text or null"):
        GenerationRecord.from_json({"prompt": "x", "config": {}, "plan": 5})
    knows_no_plans = shapes()  # the shipped model's skills: no plans
    warned = build_request("a red star", arch=knows_no_plans, config=GenerationConfig(think=True)).warnings
    assert len(warned) == 1 and "--think" in warned[0]
    assert not build_request("a red star", arch=knows_no_plans).warnings
    assert think_mode.thinks(None, shapes().replace(skills=("plans",))) and not think_mode.thinks(None, tiny())
    assert not think_mode.thinks(False, shapes().replace(skills=("plans",)))


def test_the_cli_takes_think_and_prints_the_plan(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(think_mode, "MAX_PLAN_TOKENS", 4)
    out = tmp_path / "o.png"
    with pytest.raises(SystemExit) as done:
        main(["generate", "a red star", "--model", "tiny", "--think", "--steps", "2", "--seed", "0", "-o", str(out)])
    assert done.value.code in (0, None)
    assert "plan" in capsys.readouterr().out and out.is_file()


def test_the_world_evaluation_keeps_each_rows_plan(tmp_path, monkeypatch):
    from sigma_studio.model.shapes.evaluate import evaluate_pipeline

    monkeypatch.setattr(think_mode, "MAX_PLAN_TOKENS", 3)
    make_world(tmp_path, rows=10, eval_rows=2)
    pipe = load_pipeline("shapes")
    config = GenerationConfig(steps=2, think=True)
    _, records = evaluate_pipeline(pipe, tmp_path / "eval", per_family=1, families=("text",), config=config)
    assert [isinstance(r["plan"], str) for r in records] == [True, True]  # (a per_family of 1 is rounded up to 2)
    _, plain = evaluate_pipeline(
        pipe, tmp_path / "eval", per_family=1, families=("text",), config=config.replace(think=None)
    )
    assert all("plan" not in r for r in plain)
