"""What a training run watches and reports: the finite-value guard and the metrics writer.

The guard stops a diverging run (``--lr`` far too high, a bad batch) with one clear error before the step that
went wrong is applied or saved, so the last good checkpoint, the one ``latest`` names, stays intact. The writer
(TensorBoard, and W&B through it) opens at the first scalar it writes: a run refused before its first step leaves
nothing on disk.

Used by :class:`finetune.trainer.Trainer`; nothing here is run on its own.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from sigma_studio.model.errors import SigmaError

from . import distributed
from .config import TrainConfig

log = logging.getLogger(__name__)


class TrainingDiverged(SigmaError):
    """The loss, the gradients or the weights stopped being finite: nothing of that step is kept."""


def _diverged(step: int, what: str, lr: float) -> TrainingDiverged:
    return TrainingDiverged(
        f"training diverged at step {step}: {what}. Nothing of this step was applied or saved; the last good "
        f"checkpoint (if any) is kept. Lower --lr (now {lr:g}), e.g. to {lr / 10:g}, and train again"
    )


def check_step(step: int, loss: float, grad_norm: float, lr: float) -> None:
    """Refuse a step whose loss or gradient norm is not finite (before the optimizer applies it).

    Args:
        step: the step being taken (1-based, as the progress bar and the checkpoints count).
        loss: the step's loss, averaged over every process (so all of them stop together).
        grad_norm: the global gradient norm before clipping.
        lr: the run's peak learning rate (--lr), named in the hint.
    """
    if not math.isfinite(loss):
        raise _diverged(step, f"the loss is {loss}", lr)
    if not math.isfinite(grad_norm):
        raise _diverged(step, f"the gradient norm is {grad_norm}", lr)


def check_weights(params: dict[str, torch.Tensor], step: int, lr: float, d: distributed.Dist) -> None:
    """Refuse a step after which a trainable weight is not finite (one device sync for all of them)."""
    locals_ = {n: distributed.local_tensor(p.detach()) for n, p in params.items()}
    finite = torch.stack([torch.isfinite(t).all() for t in locals_.values()])
    if distributed.all_sum(float((~finite).sum()), d) == 0:
        return
    bad = [n for n, ok in zip(locals_, finite.tolist(), strict=True) if not ok] or ["on another process"]
    raise _diverged(step, f"a weight holds NaN or inf after the optimizer step ({bad[0]})", lr)


def check_state(files: dict[str, dict[str, torch.Tensor]], step: int, lr: float) -> None:
    """The last line of defence before a checkpoint is written: no saved tensor may hold NaN or inf."""
    for file, tensors in files.items():
        for name, t in tensors.items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise _diverged(step, f"{name} in {file} holds NaN or inf", lr)


class MetricsWriter:
    """TensorBoard (and W&B) scalars under ``run_dir/tensorboard``, opened lazily at the first scalar."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, main: bool):
        self.enabled = main and (cfg.tensorboard or cfg.wandb)
        self.cfg, self.run_dir = cfg, run_dir
        self._writer = None

    def add_scalars(self, scalars: dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        if self._writer is None:
            self._writer = self._open()
            if self._writer is None:
                self.enabled = False
                return
        for key, value in scalars.items():
            self._writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def _open(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.info("tensorboard is not installed: metrics go to the progress bar only")
            return None
        if self.cfg.wandb:
            try:
                import wandb

                wandb.init(project="sigma-studio", config=self.cfg.to_json(), sync_tensorboard=True)
            except ImportError:
                log.warning("--wandb was asked for but wandb is not installed")
        return SummaryWriter(str(self.run_dir / "tensorboard"))
