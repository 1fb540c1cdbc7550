"""The stages of ``sigma shapes train`` that make its data, its autoencoder and its decoder
(:mod:`finetune.shapes_recipe` runs them in order)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from sigma_studio.model.config import ArchConfig
from sigma_studio.model.errors import InputError
from sigma_studio.model.files import write_json
from sigma_studio.model.presets import shapes
from sigma_studio.model.request.tokens import Tokenizer
from sigma_studio.model.shapes.tasks import make_world
from sigma_studio.model.shapes.vocab import build_tokenizer, world_sentences
from sigma_studio.model.weights.loader import fresh_model, write_model_dir

from .autoencoder import AEConfig, finetune_decoder, load_images, reconstruction_psnr, train_autoencoder
from .shapes_config import BALANCE_SEED, DECODER_MIX, Report, ShapesRecipe


def decoder_stage(recipe: ShapesRecipe, report: Report) -> Path:
    """``decoder/ae.safetensors``: the base autoencoder with its decoder finetuned on the targets of
    ``decoder_rows`` fresh rows split by :data:`DECODER_MIX` (written once to ``data/decoder/``); held-out PSNR
    before and after in ``decoder/metrics.json``."""
    from safetensors.torch import save

    from sigma_studio.model.data.dataset import write_parquet
    from sigma_studio.model.files import atomic_write
    from sigma_studio.model.shapes.tasks import examples
    from sigma_studio.model.weights.arch_config import read_arch_config
    from sigma_studio.model.weights.loader import load_autoencoder

    out = Path(recipe.out)
    done = out / "decoder" / "ae.safetensors"
    if done.is_file():
        return done
    data = out / "data" / "decoder"
    for family, share in DECODER_MIX.items():
        if not (data / f"{family}.parquet").is_file():
            n = max(1, round(share * recipe.decoder_rows))
            write_parquet(data / f"{family}.parquet", examples(family, "train", n, recipe.seed + 2))
    vae = finetune_decoder(
        load_autoencoder(recipe.base_dir / "ae.safetensors", read_arch_config(recipe.base_dir)), str(data),
        out / "decoder", load_images(str(out / "data" / "eval"), 512, targets_only=True),
        out / "decoder" / "metrics.json", steps=recipe.decoder_steps, lr=recipe.decoder_lr, seed=recipe.seed,
        max_images=recipe.decoder_rows, report=lambda message: report("decoder", message),
    )  # fmt: skip
    state = {k: v.detach().contiguous() for k, v in vae.state_dict().items()}
    atomic_write(done, lambda f: f.write(save(state)))  # written last: it marks the stage as done
    return done


def make_data(recipe: ShapesRecipe) -> None:
    """``data/``: the world's rows of the five families (``--boxed-rows`` of the training-only boxed family beside
    them, select's scenes with ``--fair-distractors``, compose's and layout's references anywhere with
    ``--offcentre``), then SIGMA-GEN's; each file is written once."""
    data = Path(recipe.out) / "data"
    if not (data / "world.json").is_file():
        make_world(data, recipe.rows, recipe.eval_rows, recipe.seed, attribute_tokens=recipe.attribute_tokens,
                   auxiliary={"boxed": recipe.boxed_rows} if recipe.boxed_rows else None,
                   fair_distractors=recipe.fair_distractors, offcentre=recipe.offcentre)  # fmt: skip
    make_sigmagen_data(recipe)


def make_sigmagen_data(recipe: ShapesRecipe) -> None:
    """SIGMA-GEN's rows beside the five families (``data/train/sigmagen.parquet``: one model for both papers, its
    rows mixed into every step by the trainer's shuffle) and its held-out scenes (``data/sigmagen-eval/N.parquet``
    for N = 2..5 subjects), drawn at the model's routing step and identity-sheet layout; each file is written once."""
    from .sigmagen_recipe import make_eval

    arch, data = shapes(), Path(recipe.out) / "data"
    if recipe.sigmagen_rows:
        sigmagen_rows(data / "train" / "sigmagen.parquet", recipe.sigmagen_rows, recipe.seed)
    if recipe.sigmagen_eval:
        make_eval(data / "sigmagen-eval", recipe.sigmagen_eval, recipe.seed, arch.routing_step, arch.sheet_rows)


def sigmagen_rows(path: Path, rows: int, seed: int) -> None:
    """``rows`` SIGMA-GEN rows of the shapes world at ``path`` unless written earlier: 2-5 subjects, every structure
    input, one control channel dropped in 10 % of rows (the paper's), at the shapes model's routing step and
    identity-sheet layout."""
    from sigma_studio.model.data.sigmagen import PRECISIONS

    from .sigmagen_recipe import WORLD_MAX_SUBJECTS, Stage, make_stage_data

    arch = shapes()
    stage = Stage("sigmagen", (2, WORLD_MAX_SUBJECTS), PRECISIONS, 0.1, 0.1, rows, 0)  # steps: not read here
    make_stage_data(path, stage, seed, arch.routing_step, arch.sheet_rows)


def boxed_rows(path: Path, rows: int, seed: int, attribute_tokens: bool = True) -> None:
    """``rows`` of the training-only boxed family at ``path`` unless written earlier: the rows ``sigma shapes make
    --boxed-rows`` writes at that seed (each row a pure function of its index), in the ablation's token-free arm with
    its neutral word."""
    from sigma_studio.model.data.dataset import write_parquet
    from sigma_studio.model.shapes.tasks import examples

    if not path.is_file():
        write_parquet(path, examples("boxed", "train", rows, seed, attribute_tokens=attribute_tokens))


def balance_stage(recipe: ShapesRecipe, start: Path, report: Report) -> Path:
    """The background stage's finetune (``balance/``) of ``start`` on fresh rows of every kind (``data/balance/``),
    background's weighed up; returns its exported model. Like the curriculum, it records the model it started from
    (``balance/start.json``: the SHA-256 of its weights) and refuses to resume from another (an average redone with
    another ``--curriculum-weight``, or a folder copied from another run)."""
    from .checkpoint import export, trained_steps
    from .trainer import Trainer

    out = Path(recipe.out)
    folder, done = out / "balance", out / "balance" / "model"
    record, origin = folder / "start.json", {"sha256": file_sha256(start / "ema.safetensors")}
    redo = f"delete {folder} to finetune this one (about 17 minutes on two cores)"
    if record.is_file():
        started = read_record(record, redo)
        if started != origin:
            sha = str(started.get("sha256") if isinstance(started, dict) else started)[:12]
            raise InputError(
                f"{folder} finetuned another model than {start} (sha256 {sha}, against {origin['sha256'][:12]}): {redo}"
            )
    elif folder.is_dir() and any(folder.iterdir()):  # made by hand, or by another tool: nothing says from what
        raise InputError(f"{folder} has no start.json, so nothing says which model it finetuned: {redo}")
    else:
        write_json(record, origin)
    if (done / "ema.safetensors").is_file():
        return done
    data = out / "data" / "balance"
    if not (data / "world.json").is_file():
        make_world(data, recipe.balance_rows, 2, recipe.seed + BALANCE_SEED, attribute_tokens=recipe.attribute_tokens,
                   fair_distractors=recipe.fair_distractors, offcentre=recipe.offcentre)  # fmt: skip
    if recipe.sigmagen_rows and recipe.balance_sigmagen_rows:
        sigmagen_rows(data / "train" / "sigmagen.parquet", recipe.balance_sigmagen_rows, recipe.seed + BALANCE_SEED)
    if recipe.balance_boxed_rows:
        boxed_rows(data / "train" / "boxed.parquet", recipe.balance_boxed_rows, recipe.seed + BALANCE_SEED,
                   recipe.attribute_tokens)  # fmt: skip
    report("balance", f"{data} ready")

    def on_step(s) -> None:  # "step N" first: the CLI prints every hundredth to a log file
        report("balance", f"step {s.step} of {recipe.balance_steps}, loss {s.loss:.4f}")

    if not (out / "balance" / "latest").is_file() or trained_steps(out / "balance") < recipe.balance_steps:
        Trainer(recipe.balance_config(start), on_step).run()  # else trained, stopped before its export
    return export(out / "balance", done, skills=recipe.skills)


def read_record(path: Path, redo: str) -> object:
    """A stage's JSON record of the model it started from; an unreadable one is refused, saying what to do
    (``redo``)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is unreadable ({exc}): {redo}") from None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()  # hashlib.file_digest is Python 3.11; the package supports 3.10
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def make_base(recipe: ShapesRecipe, report: Report) -> Path:
    """The autoencoder (trained here) and the world's tokenizer in a directory of the shapes architecture."""
    out = Path(recipe.out)
    base = recipe.base_dir
    if (base / "ae.safetensors").is_file():
        return base
    cfg = AEConfig(data=str(out / "data" / "train"), out=str(out / "autoencoder"), steps=recipe.ae_steps,
                   seed=recipe.seed, max_images=recipe.ae_images)  # fmt: skip
    vae = train_autoencoder(cfg, shapes().vae, lambda s, loss: report("autoencoder", f"step {s} loss {loss:.4f}"))
    psnr = reconstruction_psnr(vae, load_images(str(out / "data" / "eval"), 512))
    write_json(out / "autoencoder" / "metrics.json", {"psnr_db": psnr, "vae": dataclasses.asdict(vae.cfg)})
    report("autoencoder", f"reconstruction PSNR {psnr:.1f} dB on held-out pictures")
    tokenizer = build_tokenizer()
    arch = world_arch(vae.cfg, tokenizer)
    model = fresh_model(arch, recipe.seed)  # the same weights --init random draws from this seed
    write_model_dir(base, arch, tokenizer, {"ema.safetensors": model.state_dict(), "ae.safetensors": vae.state_dict()})
    return base


def check_base(base: Path) -> None:
    """Refuse a reused ``--base`` that holds no autoencoder, was made for another architecture than this version's
    shapes preset (an earlier generation's: 4 x 4 tokens a picture, other routing maps) or holds another tokenizer
    than this version's world (other merges, or an attribute token it lacks), before anything is written: the run
    would silently train that architecture, or words split otherwise than the held-out rows expect."""
    from sigma_studio.model.weights.arch_config import read_arch_config

    if not base.is_dir():
        raise InputError(f"--base {base} does not exist; pass the base/ folder of an earlier run")
    if not (base / "ae.safetensors").is_file():
        raise InputError(f"--base {base} holds no ae.safetensors; pass the base/ folder of an earlier run")
    arch, want = read_arch_config(base), shapes()
    fields = ("llm", "max_latent_size", "vae_transform", "routing_step", "sheet_rows")
    differ = [f for f in fields if getattr(arch, f) != getattr(want, f)]
    differ += [f"vae.{f}" for f in ("ch_mult", "z_channels") if getattr(arch.vae, f) != getattr(want.vae, f)]
    if differ:
        raise InputError(
            f"--base {base} was made for another shapes architecture ({', '.join(differ)} differ from this "
            "version's): pass the base/ folder of a run made by this version, or leave --base out to train one"
        )
    theirs, ours = Tokenizer.from_dir(base), build_tokenizer()
    sentences = world_sentences(per_family=20)
    why = None
    if _tokens(theirs) != _tokens(ours):
        why = f"another vocabulary: {len(theirs)} tokens, this version {len(ours)}"
    elif [theirs.encode(s) for s in sentences] != [ours.encode(s) for s in sentences]:
        why = "it splits the world's sentences otherwise"
    if why:
        raise InputError(
            f"--base {base} holds another tokenizer than this version's world ({why}): pass the base/ folder of a "
            "run made by this version, or leave --base out to train one"
        )


def _tokens(tokenizer: Tokenizer) -> list[str]:
    return tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))


def world_arch(vae_cfg, tokenizer: Tokenizer) -> ArchConfig:
    arch = shapes()
    if len(tokenizer) > arch.llm.vocab_size:
        raise ValueError(f"the world's tokenizer has {len(tokenizer)} tokens, over the preset's {arch.llm.vocab_size}")
    return arch.replace(vae=vae_cfg)
