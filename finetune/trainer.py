"""ONE training loop for LoRA and full finetuning, one process or many (torchrun + FSDP2).

sigma finetune --dataset Xiaoyan667/SIGMA-dataset --out runs/sigma-ft --steps 30000
torchrun --nproc-per-node 8 -m sigma_studio.cli finetune --dataset ... --out runs/sigma-ft
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from sigma_studio.model.data.dataset import BadRow, SigmaRow, parquet_files, row_groups
from sigma_studio.model.errors import InputError
from sigma_studio.model.files import check_output_dir
from sigma_studio.model.hub import HubOptions
from sigma_studio.model.run.packed import packed_forward, reduce_losses
from sigma_studio.model.weights.loader import write_model_dir

from . import build, distributed, lora, monitor
from . import checkpoint as ckpt
from .config import TrainConfig
from .data import DataStats, DropConfig, check_family_options, epoch_rows, family_of, is_held_out, row_samples
from .labels import LabelHeads
from .packing import batches, pack
from .samples import sample_prompts, write_samples
from .seeds import seeded


@dataclass
class StepLog:
    step: int
    total: int
    loss: float
    mse: float
    ce: float
    lr: float
    grad_norm: float
    tokens_per_s: float
    stats: DataStats
    label: float | None = None  # the label heads' cross-entropy (--label-weight), unweighted


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``lr``, then cosine down to ``min_lr`` at ``steps``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


class Trainer:
    def __init__(self, cfg: TrainConfig, on_step: Callable[[StepLog], None] | None = None):
        self.cfg, self.on_step = cfg, on_step
        self.run_dir = Path(cfg.out)
        self.dist = distributed.init()
        self.stats = DataStats()
        self.step = 0
        self.position = (0, 0, 0)  # (epoch, row index, repeat) of this rank's next unconsumed sample

    # -- setup ---------------------------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg, d = self.cfg, self.dist
        check_output_dir(self.run_dir)
        files = parquet_files(cfg.dataset, HubOptions(cache_dir=cfg.cache_dir))
        check_family_options(cfg.family_weights, cfg.family_shifts, files)
        resume = ckpt.latest_checkpoint(self.run_dir) if cfg.resume else None
        if not cfg.resume and ckpt.latest_checkpoint(self.run_dir) is not None:
            raise InputError(f"{self.run_dir} already holds a run: pass --resume to continue it, or another --out")
        pipe = build.load(cfg, resume, lora_on_gpu=cfg.lora is not None and d.device.type == "cuda", sharded=d.enabled)
        deferred = getattr(pipe.model, "deferred_weights", None)
        self.tokenizer, self.vae = pipe.tokenizer, pipe.vae.to(d.device)
        model, masks = build.prepare(pipe.model, cfg, self.tokenizer.ids.attributes)
        self.row_ids = self.tokenizer.ids.attributes if lora.EMBED in masks else ()
        if resume is not None and cfg.lora is not None:
            lora.load_adapter_state(model, load_file(str(resume / lora.ADAPTER_WEIGHTS)))
        model.language_model.model.gradient_checkpointing = cfg.gradient_checkpointing
        shift = model.cfg.train_timestep_shift if cfg.timestep_shift is None else cfg.timestep_shift
        self.arch = model.cfg.replace(train_timestep_shift=shift)  # the shift trained with, saved with the model
        model.train()
        if d.enabled:  # FSDP2 moves only this rank's shards to the GPU
            self.model = distributed.shard(model, d, cfg.bf16 and d.device.type == "cuda")
            if deferred is not None:  # each rank reads its own rows: no rank holds the whole model
                distributed.fill_shards(self.model, deferred, d.device)
                del self.model.deferred_weights  # unmaps the file: its pages no longer count to this process
        else:
            self.model = model.to(d.device)
        self.params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        if not self.params:
            raise InputError("Nothing to train: check --train / --lora")
        self.masks = {n: distributed.local_shard(m, self.params[n]) for n, m in masks.items()}
        # the masked weights get no weight decay: it would move their frozen rows
        groups = [{"params": [p for n, p in self.params.items() if n not in masks]}]
        groups += [{"params": [self.params[n] for n in masks], "weight_decay": 0.0}] if masks else []
        self.optimizer = build.make_optimizer(cfg, [g for g in groups if g["params"]])
        self.ema = {n: p.detach().clone().float() for n, p in self.params.items()} if cfg.ema else {}
        self.labels = LabelHeads(self.model, cfg, d.device) if cfg.label_weight else None
        if resume is not None:
            self._load_training_state(resume)
            if self.labels is not None:
                self.labels.load(resume)
        self.writer = monitor.MetricsWriter(cfg, self.run_dir, d.main)  # opens at the first scalar, not here

    # -- data ----------------------------------------------------------------------------------------------------
    def rows(
        self, held_out: bool = False, start: tuple[int, int] = (0, 0)
    ) -> Iterator[tuple[tuple[int, int], SigmaRow | BadRow]]:
        """This rank's rows, forever (epoch after epoch), from ``start`` on; each with its stream position."""
        epoch, first = start
        while True:
            seen = 0
            files = parquet_files(self.cfg.dataset, HubOptions(cache_dir=self.cfg.cache_dir))
            for i, row in epoch_rows(row_groups(files), self.cfg.seed, epoch, self.cfg.shuffle_rows, first):
                if i % self.dist.world_size != self.dist.rank:
                    continue
                if self.cfg.held_out and is_held_out(row.row_id, self.cfg.held_out) != held_out:
                    continue
                seen += 1
                yield (epoch, i), row
            if not seen:
                raise InputError(
                    f"{self.cfg.dataset} has no {'held-out' if held_out else 'training'} rows for rank {self.dist.rank}"
                )
            epoch, first = epoch + 1, 0

    def samples(self) -> Iterator[tuple[tuple[tuple[int, int, int], DataStats], object]]:
        """Usable samples, each keyed by its stream position (epoch, row, repeat) and by the data counters as of
        that position (what a checkpoint that resumes there must hold); counts what it skips.

        Counters as of (e, i, r): every row before i, and for r > 0 also row i and its repeats before r. A run
        resumed there counts row i only when r == 0, so the resumed counters end equal to a straight run's."""
        cfg = self.cfg
        drop = DropConfig(cfg.drop_text, cfg.drop_vae, cfg.drop_vit)
        first = tuple(self.position)
        stats = self.stats.copy()  # live counters, ahead of self.stats by the samples read but not trained yet
        yielded: dict[int, int] = {}
        for pos, row in self.rows(start=first[:2]):
            epoch, resumed_row = pos[0], pos == first[:2] and first[2] > 0
            if epoch > first[0] and not yielded.get(epoch - 1):
                raise InputError(
                    f"{cfg.dataset} gave no usable training sample in a whole pass "
                    f"({stats.skipped(cfg.max_tokens_per_sample)})"
                )
            before_row = stats.copy()
            if not resumed_row:  # a row resumed part-way was counted before the checkpoint
                stats.rows += 1
            if isinstance(row, BadRow):
                stats.skip(row.reason)
                continue
            g = seeded(cfg.seed, *pos)
            family = family_of(row.row_id)
            try:
                built = row_samples(
                    row, self.arch, self.tokenizer, g, drop, weight=cfg.family_weights.get(family, 1.0),
                    shift=cfg.family_shifts.get(family), text_loss=cfg.text_loss,
                    labels=cfg.label_sets if self.labels else (),
                )  # fmt: skip
            except InputError as exc:
                stats.skip(str(exc))
                continue
            for r, sample in enumerate(built):
                if resumed_row and r < first[2]:
                    continue  # repeats of the resume row that the interrupted run already trained on
                if sample.num_tokens > cfg.max_tokens_per_sample:
                    stats.too_long += 1
                    continue
                key = ((*pos, r), before_row if r == 0 else stats.copy())
                stats.used += 1
                yielded[epoch] = yielded.get(epoch, 0) + 1
                yield key, sample

    def batches(self) -> Iterator[tuple[list, tuple[tuple[int, int, int], DataStats]]]:
        """Packed sample lists, each with the position to resume from after it and the data counters as of that
        position (the stream never ends)."""
        return batches(self.samples(), self.cfg.max_tokens)

    # -- one step ------------------------------------------------------------------------------------------------
    def train_step(self, samples: list) -> dict[str, float]:
        """One optimizer step on ``samples``. The step seeds torch's global generator (module dropout draws from it),
        inside a fork of it: a caller's own random state is what it was."""
        cuda = [self.dist.device] if self.dist.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            return self._step(samples)

    def _step(self, samples: list) -> dict[str, float]:
        cfg, d = self.cfg, self.dist
        batch = pack(samples, self.arch, self.tokenizer.ids, cfg.group_mask, cfg.group_mask_scope).to(d.device)
        g = seeded(cfg.seed, "step", self.step, d.rank)
        torch.manual_seed(int(torch.randint(0, 2**62, (), generator=g)))  # module dropout (LoRA) resumes exactly
        with torch.no_grad():
            latent = self.vae.encode(batch.padded_images, generator=g)
        noise = torch.randn((batch.packed_vae_token_indexes.numel(), self.arch.patch_latent_dim), generator=g)
        autocast = (
            torch.autocast("cuda", torch.bfloat16) if cfg.bf16 and d.device.type == "cuda" else contextlib.nullcontext()
        )
        with autocast:
            out = self.model(packed_forward, batch, latent, noise.to(d.device), self.arch.train_timestep_shift)
        n_mse = distributed.all_sum(float(batch.mse_loss_indexes.numel()), d)
        n_ce = distributed.all_sum(float(batch.ce_loss_indexes.numel()), d)  # --text-loss's and every plan's words
        losses = reduce_losses(out, batch, d.world_size, int(n_mse), n_ce)
        loss = losses["mse"] + (cfg.ce_weight * losses["ce"] if "ce" in losses else 0.0)
        label_loss, label_metrics = self.labels.loss(samples, d.device) if self.labels else (torch.zeros(()), {})
        loss = loss + cfg.label_weight * label_loss
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, cfg)
        loss.backward()
        build.mask_gradients(self.params, self.masks)
        grad_norm = torch.nn.utils.clip_grad_norm_(list(self.params.values()), cfg.grad_clip)
        mean = lambda x: distributed.all_sum(float(x), d) / d.world_size  # noqa: E731
        metrics = {
            "loss": mean(loss.detach()),
            "mse": mean(losses["mse"].detach()),
            "ce": mean(losses["ce"].detach()) if "ce" in losses else 0.0,
            "lr": lr_at(self.step, cfg),
            "grad_norm": float(distributed.full_tensor(grad_norm)),
            "tokens": distributed.all_sum(float(batch.sequence_length), d),
            **({"label": mean(label_loss.detach())} | label_metrics if self.labels else {}),
        }
        # a NaN/inf step stops the run before it touches the weights, the EMA or a checkpoint
        monitor.check_step(self.step + 1, metrics["loss"], metrics["grad_norm"], cfg.lr)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.labels is not None:
            self.labels.step(lr_at(self.step, cfg), d)
        monitor.check_weights(self.params, self.step + 1, cfg.lr, d)
        with torch.no_grad():
            for name, e in self.ema.items():
                e.lerp_(self.params[name].detach().float(), 1 - cfg.ema)
        return metrics

    @torch.no_grad()
    def evaluate(self, samples: list, draws: int = 4) -> float:
        """Mean flow-matching loss over fixed noise and timesteps (the same draws every call): a steady measure
        of progress on held-out (or, to check overfitting, training) samples."""
        cfg, d = self.cfg, self.dist
        was_training = self.model.training
        self.model.eval()
        batch = pack(samples, self.arch, self.tokenizer.ids, cfg.group_mask, cfg.group_mask_scope).to(d.device)
        total = 0.0
        for k in range(draws):
            g = seeded(cfg.seed, "eval", k)
            latent = self.vae.encode(batch.padded_images, generator=g)
            noise = torch.randn((batch.packed_vae_token_indexes.numel(), self.arch.patch_latent_dim), generator=g)
            raw = torch.randn(batch.packed_timesteps.shape, generator=g).to(d.device)
            fixed = batch.packed_timesteps.clone()
            fixed[torch.isfinite(fixed)] = raw[torch.isfinite(fixed)]
            batch.packed_timesteps = fixed
            out = self.model(packed_forward, batch, latent, noise.to(d.device), self.arch.train_timestep_shift)
            total += float(reduce_losses(out, batch)["mse"])
        self.model.train(was_training)
        return total / draws

    # -- the loop ------------------------------------------------------------------------------------------------
    def run(self) -> Path:
        self.setup()
        cfg = self.cfg
        prompts = sample_prompts(self.rows(held_out=bool(cfg.held_out)), cfg.sample_prompts) if cfg.sample_every else []
        stream = self.batches()
        start = time.perf_counter()
        try:
            self._loop(stream, prompts, start)
        finally:
            self.writer.close()
        distributed.shutdown(self.dist)
        return self.run_dir

    def _loop(self, stream, prompts: list[SigmaRow], start: float) -> None:
        cfg, tokens = self.cfg, 0.0
        while self.step < cfg.steps:
            try:
                samples, (resume_pos, stats) = next(stream)
                problem = None
            except InputError as exc:
                samples, problem = None, exc
            if distributed.all_sum(0.0 if problem else 1.0, self.dist) < self.dist.world_size:  # every rank agrees
                raise problem or InputError("another process ran out of usable training data")
            metrics = self.train_step(samples)
            self.step += 1
            self.position, self.stats = resume_pos, stats
            tokens += metrics["tokens"]
            self._log(metrics, tokens / (time.perf_counter() - start))
            if cfg.save_every and self.step % cfg.save_every == 0 or self.step == cfg.steps:
                self.save()
            if prompts and self.step % cfg.sample_every == 0:
                write_samples(self, prompts, self.run_dir / "samples")

    def _log(self, metrics: dict[str, float], tokens_per_s: float) -> None:
        if self.step % self.cfg.log_every == 0:
            keys = ("loss", "mse", "ce", "lr", "grad_norm", *(k for k in metrics if k.startswith("label")))
            scalars = {f"train/{key}": metrics[key] for key in keys}
            self.writer.add_scalars({**scalars, "train/tokens_per_s": tokens_per_s}, self.step)
        if self.on_step is not None and self.dist.main:
            self.on_step(StepLog(self.step, self.cfg.steps, metrics["loss"], metrics["mse"], metrics["ce"],
                                 metrics["lr"], metrics["grad_norm"], tokens_per_s, self.stats,
                                 metrics.get("label")))  # fmt: skip

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def save(self) -> Path:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        cfg, d = self.cfg, self.dist
        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        raw = get_model_state_dict(self.model, options=opts)
        copy = lambda: {k: v.detach().clone() for k, v in get_model_state_dict(self.model, options=opts).items()}  # noqa: E731
        ema_state = self._with_ema(copy) if self.ema else raw
        optim = get_optimizer_state_dict(self.model, self.optimizer, options=opts)
        positions = distributed.gather_objects(self.position, d)
        path = self.run_dir / "checkpoints" / f"step-{self.step:06d}"
        if d.main:
            tensors, meta = ckpt.flatten_optimizer(optim)
            files = {"ae.safetensors": self.vae.state_dict(), "optimizer.safetensors": tensors}
            if cfg.lora is not None:
                files[lora.ADAPTER_WEIGHTS] = lora.adapter_part(raw, self.row_ids)
                files["adapter_ema.safetensors"] = lora.adapter_part(ema_state, self.row_ids)
                files["ema.safetensors"] = ckpt.merged_lora_state(ema_state, cfg.lora.alpha, cfg.lora.rank)
            else:
                files["model.safetensors"] = raw
                files["ema.safetensors"] = ema_state
            state = {"step": self.step, "positions": positions, "optimizer": meta, "config": cfg.to_json(),
                     "data": vars(self.stats), "group_mask": cfg.group_mask,
                     "group_mask_scope": cfg.group_mask_scope,
                     "attribute_projection": cfg.attribute_projection, "lora": cfg.lora is not None}  # fmt: skip
            monitor.check_state(files, self.step, cfg.lr)  # never save NaN/inf
            extra = {ckpt.STATE: state}
            if self.labels is not None:  # the training-only heads, beside the model (never in its weights)
                heads, head_json = self.labels.files()
                files, extra = files | heads, extra | head_json
            if cfg.lora is not None:
                extra[lora.ADAPTER_CONFIG] = lora.adapter_config(cfg.lora, cfg.model)
            # what a finetune teaches depends on its data, which the trainer does not judge: skills not known
            write_model_dir(path, self.arch.replace(skills=None), self.tokenizer, files, extra)
            ckpt.point_latest(self.run_dir, path)
            ckpt.prune(self.run_dir, cfg.keep)
        distributed.barrier(d)
        return path

    def _with_ema(self, fn):
        """Run ``fn`` with the EMA values in the trainable parameters, then put the raw values back."""
        with torch.no_grad():
            backup = {n: p.detach().clone() for n, p in self.params.items()}
            for n, p in self.params.items():
                p.copy_(self.ema[n].to(p.dtype))
            try:
                return fn()
            finally:
                for n, p in self.params.items():
                    p.copy_(backup[n])

    def _load_training_state(self, checkpoint: Path) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        state = ckpt.read_state(checkpoint)
        self.step = state["step"]
        positions = state["positions"]
        if len(positions) != self.dist.world_size:
            raise InputError(f"{checkpoint} was saved by {len(positions)} processes; resume it with as many")
        order = {k: state.get("config", {}).get(k, 0) for k in ("shuffle_rows", "seed")}  # before: files in order
        if order != {"shuffle_rows": self.cfg.shuffle_rows, "seed": self.cfg.seed}:  # its place is one in that order
            raise InputError(f"{checkpoint} read its data with --shuffle-rows {order['shuffle_rows']} and --seed "
                             f"{order['seed']}: resume it with the same")  # fmt: skip
        self.position = tuple(positions[self.dist.rank]) + (0,) * (3 - len(positions[self.dist.rank]))
        for key, value in state.get("data", {}).items():
            setattr(self.stats, key, value)
        optim = ckpt.unflatten_optimizer(load_file(str(checkpoint / "optimizer.safetensors")), state["optimizer"])
        # strict=False: parameters that never received a gradient (e.g. lm_head without --text-loss) have no state
        options = StateDictOptions(full_state_dict=True, strict=False)
        for live, saved in zip(self.optimizer.param_groups, optim["param_groups"], strict=False):
            for key, value in saved.items():  # keys an optimizer adds at its first step (Prodigy's d estimates)
                live.setdefault(key, value)
        set_optimizer_state_dict(self.model, self.optimizer, optim, options=options)
        ema_file = "adapter_ema.safetensors" if self.cfg.lora is not None else "ema.safetensors"
        if self.ema:
            saved = load_file(str(checkpoint / ema_file))
            if lora.EMBED in self.ema:  # a LoRA adapter holds the trained rows; the others are the raw (frozen) ones
                saved = lora.with_embedding(saved, distributed.full_tensor(self.params[lora.EMBED]))
            for name, e in self.ema.items():
                e.copy_(distributed.local_shard(saved[name], self.params[name]).float())
