"""The one-command recipe that trains the shipped ``shapes`` model from nothing on a CPU.

    sigma shapes train --out runs/shapes            # every stage; rerun the same command to continue

Stages, each skipped when its output exists and each resumable:

1. ``data/``: the world as SIGMA-format parquet (:func:`model.shapes.tasks.make_world`), SIGMA-GEN's rows beside the
   five families (``train/sigmagen.parquet``) and its held-out scenes (``sigmagen-eval/``);
2. ``autoencoder/``: the toy FLUX autoencoder (:mod:`finetune.autoencoder`; 4x, so 8 x 8 latent tokens a 64 px
   picture) on pictures of every kind the model meets, with its latent scale measured;
3. ``base/``: a model directory of the ``shapes`` architecture with the world's tokenizer and that autoencoder;
4. ``train/``: ``sigma finetune`` itself (the :class:`~finetune.trainer.Trainer`) from a fresh initialisation
   (``init="random"``) on the training rows, every step a shuffled mix of all six kinds;
5. ``decoder/``: the autoencoder's decoder finetuned (encoder and latent scaling frozen, so the MoT's latents keep
   their meaning) on targets of every kind, coloured canvases weighed up (:data:`DECODER_MIX`): the base
   autoencoder drew a coloured background's edge grey, so a background row could not be read right even as the
   target itself passed through it (``--decoder-steps 0``: none);
6. ``mot/``: the MoT's final EMA weights exported in float16 with that autoencoder;
7. ``curriculum/``: SIGMA-GEN's curriculum (:mod:`finetune.sigmagen_recipe`, 5 000 steps) from ``mot/``, half of its
   rows SIGMA's five families (``--curriculum-replay``), so that it does not forget them;
8. ``model/`` (what ``--model shapes`` loads): the average of ``mot/`` and the curriculum's model
   (``--curriculum-weight`` of the latter; :func:`finetune.checkpoint.average_models`). Measured on 100 held-out
   rows a family (docs/SHAPES.md), the curriculum alone raised compose and select and lowered text; the average
   keeps most of the gains and most of text. With ``--curriculum-weight 0`` or no SIGMA-GEN rows, ``model/`` is
   the MoT's export (no ``mot/``) and stages 7-8 do not run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sigma_studio.model.config import MASK_SCOPE, MAX_SEED, ArchConfig
from sigma_studio.model.errors import InputError
from sigma_studio.model.files import check_output_dir, write_json
from sigma_studio.model.presets import shapes
from sigma_studio.model.request.tokens import Tokenizer
from sigma_studio.model.shapes.tasks import make_world
from sigma_studio.model.shapes.vocab import build_tokenizer, world_sentences
from sigma_studio.model.weights.loader import fresh_model, write_model_dir

from .autoencoder import AEConfig, finetune_decoder, load_images, reconstruction_psnr, train_autoencoder
from .checkpoint import average_models, export, trained_steps
from .config import TrainConfig, WorldRecipe, check_int, check_number
from .sigmagen_recipe import STAGES, SigmaGenRecipe, Stage

log = logging.getLogger(__name__)

# The decoder finetune's pictures: targets of fresh training rows (seed + 2), this share of them a family; background's
# coloured canvases are 7 % of the MoT's rows and what the base autoencoder reconstructs worst.
DECODER_MIX: dict[str, float] = {"background": 0.5, "compose": 0.125, "select": 0.125, "layout": 0.125, "text": 0.125}


@dataclass(frozen=True)
class ShapesRecipe(WorldRecipe):
    out: str = "runs/shapes"
    rows: int = 20_000  # training rows (split over the families by model.shapes.tasks.MIX)
    eval_rows: int = 40  # held-out rows per family
    sigmagen_rows: int = 8000  # SIGMA-GEN training rows: 2-5 subjects by 2-D box, 3-D box, mask or mask + depth
    sigmagen_eval: int = 25  # held-out SIGMA-GEN scenes per subject count (2, 3, 4, 5)
    ae_steps: int = 2400
    ae_images: int = 8000  # distinct pictures the autoencoder trains on, drawn from every family and SIGMA-GEN
    steps: int = 12_000  # optimizer steps of the MoT model
    max_tokens: int = 1024  # about six rows of 8 x 8-token pictures a step
    lr: float = 7e-4
    decoder_steps: int = 1000  # the decoder finetune's steps (0: none)
    decoder_rows: int = 4800  # the decoder finetune's pictures, split by DECODER_MIX
    decoder_lr: float = 3e-4
    drop_text: float = 0.1
    drop_vae: float = 0.1
    drop_vit: float = 0.3
    group_mask: bool = True
    group_mask_scope: str = MASK_SCOPE  # with group_mask: eq. 9 as written, or Fig. 2's intent (MASK_ARMS)
    attribute_tokens: bool = True  # False: the ablation's neutral word instead of each attribute token
    base: str | None = None  # reuse this base directory (autoencoder and tokenizer) instead of training one
    curriculum_weight: float = 0.5  # the shipped weights: this share of SIGMA-GEN's curriculum finetune (0: none)
    curriculum_replay: float = 0.5  # share of SIGMA's five families among the curriculum's rows
    curriculum: tuple[Stage, ...] = STAGES  # its stages, as `sigma sigmagen train` runs them

    # a finished or stopped run may be continued on a longer schedule (refused once its curriculum has started:
    # check_curriculum_start), and its last stage, the average, redone with another weight
    RESUMABLE_CHANGES = ("out", "steps", "curriculum_weight")

    def __post_init__(self) -> None:
        """Every option checked before anything is written (``--steps 0`` used to write the world's data first)."""
        check_int("--rows", self.rows, 10)
        check_int("eval_rows", self.eval_rows, 2)
        check_int("--ae-steps", self.ae_steps, 1)
        check_int("--sigmagen-rows", self.sigmagen_rows, 0)
        check_int("sigmagen_eval", self.sigmagen_eval, 0)
        check_int("--seed", self.seed, 0, MAX_SEED)
        check_int("--decoder-steps", self.decoder_steps, 0)
        check_int("decoder_rows", self.decoder_rows, len(DECODER_MIX))
        check_number("decoder_lr", self.decoder_lr, 0.0, strict=True)
        check_number("--curriculum-weight", self.curriculum_weight, 0.0)
        if self.curriculum_weight > 1:
            share = self.curriculum_weight
            raise InputError(f"--curriculum-weight is a share, from 0 (no curriculum) to 1 (got {share})")
        check_number("--curriculum-replay", self.curriculum_replay, 0.0, below=1.0)
        if not self.attribute_tokens and self.with_curriculum:  # its replayed SIGMA rows carry their tokens
            raise InputError(
                "--no-attribute-tokens trains the ablation's token-free arm on SIGMA's families, but SIGMA-GEN's "
                "curriculum replays them with their tokens: add --sigmagen-rows 0 or --curriculum-weight 0"
            )
        self.train_config()  # the finetune's own checks (--steps, the learning rates, ...)

    @property
    def base_dir(self) -> Path:
        return Path(self.base) if self.base else Path(self.out) / "base"

    @property
    def skills(self) -> tuple[str, ...]:
        """What the model is trained to read, stored with it: the shapes preset's skills less SIGMA-GEN's subjects
        without their rows and the attribute tokens in the ablation's token-free arm (so that model is warned of)."""
        trained = {"subjects": self.sigmagen_rows > 0, "attribute_tokens": self.attribute_tokens}
        return tuple(s for s in shapes().skills if trained.get(s, True))

    @property
    def with_curriculum(self) -> bool:
        return self.curriculum_weight > 0 and self.sigmagen_rows > 0

    def curriculum_recipe(self) -> SigmaGenRecipe:
        """SIGMA-GEN's curriculum from this run's MoT (``mot/``), with SIGMA's rows replayed; no decoder stage of its
        own (the model keeps the recipe's decoder); its held-out scenes as many a subject count as this run's."""
        out = Path(self.out)
        return CurriculumRecipe(
            out=str(out / "curriculum"), model=str(out / "mot"), stages=self.curriculum, replay=self.curriculum_replay,
            decoder_steps=0, seed=self.seed, eval_rows=max(1, self.sigmagen_eval),
        )  # fmt: skip

    def train_config(self) -> TrainConfig:
        out = Path(self.out)
        return self.schedule(
            out=str(out / "train"), dataset=str(out / "data" / "train"), model=str(self.base_dir), init="random",
            steps=self.steps, group_mask=self.group_mask, group_mask_scope=self.group_mask_scope,
            drop_text=self.drop_text, drop_vae=self.drop_vae, drop_vit=self.drop_vit, seed=self.seed,
            resume=(out / "train" / "latest").is_file(),
        )  # fmt: skip


class CurriculumRecipe(SigmaGenRecipe):
    """SIGMA-GEN's curriculum inside a shapes run: it starts from the run's own ``mot/`` wherever the run folder is,
    so a moved (or otherwise spelt) run folder resumes it."""

    RESUMABLE_CHANGES = ("out", "model")


Report = Callable[[str, str], None]


def run(recipe: ShapesRecipe, report: Report = lambda stage, msg: None, on_step=None) -> Path:
    """Run (or continue) every stage; returns the exported model directory. ``timings.json`` holds each stage's
    seconds summed over the invocations that finished it or found it done (a resumed stage adds what it still took,
    a stage done earlier about 0; the part of a stage that an interrupted invocation ran is not counted)."""
    out = Path(recipe.out)
    check_output_dir(out)
    recipe.check_same_run()
    check_curriculum_start(recipe)
    if recipe.base or (recipe.base_dir / "sigma_config.json").is_file():  # given, or this run's own from before
        check_base(recipe.base_dir)
    write_json(out / "recipe.json", recipe.to_json())
    timings_path = out / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    lap = [time.perf_counter()]

    def clock(stage: str) -> None:  # written after every stage, so an interrupted invocation keeps what it did
        now = time.perf_counter()
        timings[stage] = timings.get(stage, 0.0) + now - lap[0]
        timings["total"] = sum(v for k, v in timings.items() if k != "total")
        write_json(timings_path, timings)
        lap[0] = now

    if not (out / "data" / "world.json").is_file():
        make_world(out / "data", recipe.rows, recipe.eval_rows, recipe.seed, attribute_tokens=recipe.attribute_tokens)
    make_sigmagen_data(recipe)
    clock("data")
    report("data", f"{out / 'data'} ready")
    base = make_base(recipe, report)
    clock("autoencoder")
    report("base", f"{base} ready")
    from .trainer import Trainer

    if not (out / "train" / "latest").is_file() or trained_steps(out / "train") < recipe.steps:
        Trainer(recipe.train_config(), on_step).run()
    clock("finetune")
    skills = recipe.skills
    ae = decoder_stage(recipe, report) if recipe.decoder_steps else None
    clock("decoder")
    if not recipe.with_curriculum:
        exported = export(out / "train", out / "model", skills=skills, ae_path=ae)
        clock("export")
        report("model", f"{exported} written")
        return exported
    mot = export(out / "train", out / "mot", skills=skills, ae_path=ae)
    clock("export")
    tuned = curriculum_stage(recipe, report)
    clock("curriculum")
    exported = average_models(mot, tuned, recipe.curriculum_weight, out / "model")
    clock("average")
    report("model", f"{exported} written ({recipe.curriculum_weight:g} of {tuned}, the rest {mot})")
    return exported


def check_curriculum_start(recipe: ShapesRecipe) -> None:
    """Refuse, before any training, a run whose MoT would no longer be the one its curriculum finetuned: trained
    further (another --steps), or trained again (train/ gone); averaging either with that finetune would mix two
    models. (The recorded hash catches the rest when the curriculum stage starts: :func:`curriculum_stage`.)"""
    started = curriculum_origin(recipe)
    if started is None:
        return
    folder = Path(recipe.out) / "curriculum"
    if started["steps"] != recipe.steps:
        raise InputError(
            f"{folder} finetuned the MoT of --steps {started['steps']}: pass --steps {started['steps']} to resume "
            f"this run, or delete that folder to train the MoT to {recipe.steps} steps and finetune it again"
        )
    if not (Path(recipe.out) / "train" / "latest").is_file():
        raise InputError(
            f"{folder} finetuned the MoT trained in {Path(recipe.out) / 'train'}, which is gone: restore it, or "
            "delete the curriculum folder too to train a MoT and finetune it again"
        )


def curriculum_origin(recipe: ShapesRecipe) -> dict | None:
    """What ``curriculum/mot.json`` recorded of the MoT the curriculum started from (``steps``, ``sha256`` of its
    ``ema.safetensors``); None before the curriculum started, or when this run ships no curriculum (its weight 0).
    A curriculum folder without that record (one made by ``sigma sigmagen train`` by hand) or with an older
    recipe's (its steps alone) is refused: nothing says which MoT it finetuned."""
    folder = Path(recipe.out) / "curriculum"
    path = folder / "mot.json"
    redo = f"delete {folder} (or move it away) to finetune this run's MoT again (about 20 minutes on two cores)"
    if not recipe.with_curriculum:
        return None
    if not path.is_file():
        if folder.is_dir() and any(folder.iterdir()):
            raise InputError(f"{folder} has no mot.json, so nothing says which MoT it finetuned: {redo}")
        return None
    try:
        origin = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is unreadable ({exc}): {redo}") from None
    if isinstance(origin, dict) and "steps" in origin and "sha256" not in origin:
        raise InputError(f"{path} was written by an older recipe that recorded the MoT's steps alone, so nothing says "
                         f"whether this run's MoT is the one it finetuned: {redo}")  # fmt: skip
    try:
        return {"steps": int(origin["steps"]), "sha256": str(origin["sha256"])}
    except (TypeError, ValueError, KeyError) as exc:
        raise InputError(f"{path} is no record of a MoT ({exc!r}): {redo}") from None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()  # hashlib.file_digest is Python 3.11; the package supports 3.10
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def curriculum_stage(recipe: ShapesRecipe, report: Report) -> Path:
    """``curriculum/``: SIGMA-GEN's curriculum from ``mot/`` (:meth:`ShapesRecipe.curriculum_recipe`), resumable like
    every stage; returns its last stage's model."""
    from .sigmagen_recipe import run as run_curriculum

    sg = recipe.curriculum_recipe()
    weights = Path(sg.model) / "ema.safetensors"
    mot = {"steps": trained_steps(Path(recipe.out) / "train"), "sha256": file_sha256(weights)}
    started = curriculum_origin(recipe)
    if started is None:  # the MoT it starts from, recorded before its first step (check_curriculum_start)
        write_json(Path(sg.out) / "mot.json", mot)
    elif started != mot:  # the MoT was trained again (train/ deleted, or another run's curriculum copied in)
        raise InputError(
            f"{sg.out} finetuned another MoT than {sg.model} ({started['steps']} steps, sha256 "
            f"{started['sha256'][:12]}, against {mot['steps']}, {mot['sha256'][:12]}): delete {sg.out} to finetune "
            "this one, or restore the MoT it started from"
        )

    def on_step(k: int, s) -> None:  # "step N" first: the CLI prints every hundredth to a log file
        report("curriculum", f"step {s.step} of {sg.stages[k].name} ({k + 1}/{len(sg.stages)}), loss {s.loss:.4f}")

    return run_curriculum(sg, lambda stage, message: report("curriculum", f"{stage}: {message}"), on_step)


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


def make_sigmagen_data(recipe: ShapesRecipe) -> None:
    """SIGMA-GEN's rows beside the five families (``data/train/sigmagen.parquet``: one model for both papers, its
    rows mixed into every step by the trainer's shuffle) and its held-out scenes (``data/sigmagen-eval/N.parquet``
    for N = 2..5 subjects), drawn at the model's routing step and identity-sheet layout; each file is written once."""
    from sigma_studio.model.data.sigmagen import PRECISIONS

    from .sigmagen_recipe import WORLD_MAX_SUBJECTS, Stage, make_eval, make_stage_data

    arch, data = shapes(), Path(recipe.out) / "data"
    if recipe.sigmagen_rows:  # every structure input, one control channel dropped in 10 % of rows (the paper's)
        stage = Stage("sigmagen", (2, WORLD_MAX_SUBJECTS), PRECISIONS, 0.1, 0.1, recipe.sigmagen_rows, recipe.steps)
        make_stage_data(data / "train" / "sigmagen.parquet", stage, recipe.seed, arch.routing_step, arch.sheet_rows)
    if recipe.sigmagen_eval:
        make_eval(data / "sigmagen-eval", recipe.sigmagen_eval, recipe.seed, arch.routing_step, arch.sheet_rows)


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
