"""Training the small autoencoder (the FLUX AE architecture at toy size) that a model trained from scratch needs.

``sigma finetune`` never trains the VAE (the released recipe keeps it frozen), so a world of its own gets this
short loop: L1 + MSE reconstruction with a small KL term on the posterior, AdamW, cosine schedule. Every draw
comes from generators seeded by (seed, step), and the state is saved atomically every ``save_every`` steps, so a
run resumes exactly. At the end the latent scale and shift are measured, so the latents the MoT model sees have
about zero mean and unit variance.

``decoder_only`` finetunes the decoder of an existing autoencoder (``start``) and leaves its encoder, scale and
shift alone: the latent space a trained MoT model predicts in stays exactly the same, only its pictures are drawn
better (the SIGMA-GEN curriculum uses it for multi-object scenes, see ``finetune/sigmagen_recipe.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from sigma_studio.model.arch.autoencoder import AutoEncoder
from sigma_studio.model.config import VAEConfig
from sigma_studio.model.data.dataset import SigmaRow, iter_rows, parquet_files
from sigma_studio.model.errors import InputError
from sigma_studio.model.files import atomic_write
from sigma_studio.model.images import to_tensor

from .config import check_int, check_number
from .trainer import lr_at

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AEConfig:
    data: str  # a parquet file or folder of SIGMA rows (every image of every row is used)
    out: str  # run directory: ae-state.pt (weights, optimizer, step) while training
    steps: int = 2400
    batch: int = 16
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup: int = 50
    kl_weight: float = 1e-6
    initial_logvar: float = -8.0  # posterior log-variance at initialisation (the KL term moves it from there)
    max_images: int = 6000
    save_every: int = 250
    seed: int = 0
    targets_only: bool = False  # only each row's last image (its target: what the model draws)
    decoder_only: bool = False  # finetune the decoder of ``start``; the encoder and the latent scaling stay

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "max_images"):
            check_int(f"autoencoder {name}", getattr(self, name), 1)
        for name in ("warmup", "save_every", "seed"):
            check_int(f"autoencoder {name}", getattr(self, name), 0)
        check_number("autoencoder lr", self.lr, 0.0, strict=True)
        check_number("autoencoder min_lr", self.min_lr, 0.0)


def load_images(source: str, limit: int, targets_only: bool = False, seed: int = 0) -> torch.Tensor:
    """Up to ``limit`` distinct images of the rows under ``source`` (every image, or each row's target): a seeded
    uniform draw over the whole source (a reservoir of twice ``limit`` encoded images, so memory stays bounded), not
    the first ``limit`` in file order, which in a dataset written one family per file were one or two families.
    Images of another size than most (SIGMA-GEN's identity sheets) are left out: the pictures are one tensor
    [n, 3, H, W] in [-1, 1]."""
    rng, keep, seen, pool = random.Random(seed), 2 * limit, set(), []
    for row in iter_rows(parquet_files(source)):
        if not isinstance(row, SigmaRow):
            continue
        for data in row.images[-1:] if targets_only else row.images:
            digest = hashlib.blake2b(data, digest_size=16).digest()
            if digest in seen:
                continue
            seen.add(digest)
            k = len(seen) - 1  # Algorithm R: every distinct image ends in the reservoir with the same chance
            if k < keep:
                pool.append(data)
            elif (j := rng.randrange(k + 1)) < keep:
                pool[j] = data
    rng.shuffle(pool)
    pictures = []
    for data in pool:
        try:
            pictures.append(SigmaRow("", "", (data,)).decode_images()[0])
        except InputError:  # a row that cannot be decoded is skipped, as training skips it
            continue
    size = Counter(p.size for p in pictures).most_common(1)[0][0] if pictures else None
    chosen = [to_tensor(p) for p in pictures if p.size == size][:limit]
    if not chosen:
        raise InputError(f"{source} holds no readable image to train the autoencoder on")
    return torch.stack(chosen)


def _save_state(path: Path, state: dict) -> None:
    atomic_write(path, lambda f: torch.save(state, f))


def _loss(vae: AutoEncoder, x: torch.Tensor, g: torch.Generator, cfg: AEConfig) -> torch.Tensor:
    """L1 + MSE reconstruction of ``x`` through a posterior sample, plus the KL term (the encoder frozen with
    ``decoder_only``)."""
    with torch.set_grad_enabled(not cfg.decoder_only):
        moments = vae.encoder(x)
    mean, logvar = moments.chunk(2, dim=1)
    logvar = logvar.clamp(-30, 20)
    z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=g)
    rec = vae.decoder(z)
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3)).mean()
    return F.l1_loss(rec, x) + F.mse_loss(rec, x) + cfg.kl_weight * kl


def train_autoencoder(
    cfg: AEConfig,
    vae_cfg: VAEConfig,
    on_step: Callable[[int, float], None] | None = None,
    start: AutoEncoder | None = None,
) -> AutoEncoder:
    """Train (or resume) the autoencoder; returns it with ``scale_factor`` / ``shift_factor`` measured. With
    ``cfg.decoder_only``, finetune ``start``'s decoder instead (its scale and shift are kept)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    images = load_images(cfg.data, cfg.max_images, cfg.targets_only, cfg.seed)
    log.info("autoencoder: %d images of %s", len(images), tuple(images.shape[1:]))
    if cfg.decoder_only:
        if start is None:
            raise ValueError("decoder_only finetunes an existing autoencoder: pass start")
        vae = start.float()
        vae.encoder.requires_grad_(False).eval()
        trained = list(vae.decoder.parameters())
        for p in trained:
            p.requires_grad_(True)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            vae = AutoEncoder(dataclasses.replace(vae_cfg, scale_factor=1.0, shift_factor=0.0))
        with torch.no_grad():  # start with a near-deterministic posterior: unit-variance noise would drown the signal
            vae.encoder.conv_out.bias[vae_cfg.z_channels :].fill_(cfg.initial_logvar)
        trained = list(vae.parameters())
    opt = torch.optim.AdamW(trained, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
    step = 0
    state_path = out / "ae-state.pt"
    if state_path.is_file():
        state = torch.load(state_path, weights_only=True)
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = state["step"]
        log.info("autoencoder: resumed at step %d", step)
    vae.train()
    while step < cfg.steps:
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        x = images[torch.randint(0, len(images), (cfg.batch,), generator=g)]
        loss = _loss(vae, x, g, cfg)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)  # the finetune schedule: warm-up, then cosine to min_lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        step += 1
        if on_step is not None:
            on_step(step, float(loss.detach()))
        if step % cfg.save_every == 0 or step == cfg.steps:
            _save_state(state_path, {"model": vae.state_dict(), "optimizer": opt.state_dict(), "step": step})
    vae.eval().requires_grad_(False)
    return vae if cfg.decoder_only else calibrate(vae, images[:1024])


@torch.no_grad()
def calibrate(vae: AutoEncoder, images: torch.Tensor) -> AutoEncoder:
    """Set shift = mean and scale = 1 / std of the posterior means, so scaled latents are about N(0, 1)."""
    means = torch.cat([vae.encoder(chunk).chunk(2, dim=1)[0] for chunk in images.split(128)])
    shift, std = float(means.mean()), float(means.std())
    vae.cfg = dataclasses.replace(vae.cfg, scale_factor=round(1 / std, 6), shift_factor=round(shift, 6))
    return vae


@torch.no_grad()
def reconstruction_psnr(vae: AutoEncoder, images: torch.Tensor) -> float:
    """Mean PSNR (dB, on [0, 1] pixels) of encode (posterior mean) then decode."""
    rec = torch.cat([vae.decode(vae.encode(chunk)) for chunk in images.split(128)]).clamp(-1, 1)
    mse = ((rec - images) / 2).pow(2).mean(dim=(1, 2, 3))
    return float((10 * torch.log10(1 / mse.clamp_min(1e-10))).mean())


def finetune_decoder(
    start: AutoEncoder,
    data: str,
    state_dir: Path,
    held_out: torch.Tensor,
    metrics: Path,
    *,
    steps: int,
    lr: float,
    seed: int,
    max_images: int,
    report: Callable[[str], None],
) -> AutoEncoder:
    """``start``'s decoder finetuned on the targets of the rows under ``data``, its encoder and latent scaling frozen
    (so a model's latents keep their meaning); resumable from ``state_dir``. The held-out pictures' PSNR before and
    after is reported and written to ``metrics``."""
    from sigma_studio.model.files import write_json

    cfg = AEConfig(data=data, out=str(state_dir), steps=steps, lr=lr, warmup=50, seed=seed, targets_only=True,
                   decoder_only=True, max_images=max_images)  # fmt: skip
    before = reconstruction_psnr(start, held_out)
    report(f"{steps} steps of the decoder (held-out PSNR {before:.1f} dB before)")

    def on_step(step: int, loss: float) -> None:
        if step % 50 == 0 or step == steps:
            report(f"step {step}/{steps} loss {loss:.4f}")

    vae = train_autoencoder(cfg, start.cfg, on_step, start)
    after = reconstruction_psnr(vae, held_out)
    write_json(metrics, {"psnr_db_before": before, "psnr_db_after": after})
    report(f"held-out PSNR {before:.1f} -> {after:.1f} dB")
    return vae
