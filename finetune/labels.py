"""Training-only heads that read labels off latent tokens: the references', and the target's (``--label-weight``).

A row whose ``meta`` says what its pictures show (the shapes world's: :mod:`model.shapes.labels`) gives every
token of a labelled reference, and with the ``drawn`` set of the target being drawn, a class per label set
(``label_sets``). One linear head per set reads the hidden states the model computes for those tokens after layer
``label_layer``; their cross-entropy, times ``label_weight``, is added to the flow-matching loss, so the layers up to
that one learn to carry the labels in those tokens, where every later layer can find them.

The heads live beside the model, not in it: the weights the run exports have the plain architecture's keys
(strict loading holds), and a checkpoint keeps the heads and their optimizer state in ``label_heads.safetensors``
so that ``--resume`` goes on with them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from sigma_studio.model.errors import InputError
from sigma_studio.model.shapes.labels import HEADS

from . import checkpoint as ckpt
from . import distributed
from .config import TrainConfig

FILE = "label_heads.safetensors"
META = "label_heads.json"


def label_targets(samples: list) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Label set -> (packed token positions, classes) over the samples laid end to end as :func:`pack` lays them."""
    idx: dict[str, list[int]] = {}
    classes: dict[str, list[int]] = {}
    offset = 0
    for s in samples:
        for block, start in zip(s.plan.blocks, s.plan.offsets(), strict=True):
            labels = s.labels.get(block.image) if block.kind in ("vae", "noise") else None
            for name, values in (labels or {}).items():
                if len(values) != block.length - 2:  # the tokens between the image's two markers
                    raise ValueError(f"{len(values)} '{name}' labels for an image block of {block.length - 2} tokens")
                first = offset + start + 1
                idx.setdefault(name, []).extend(range(first, first + len(values)))
                classes.setdefault(name, []).extend(values.tolist())
        offset += s.plan.length
    return {name: (torch.tensor(idx[name]), torch.tensor(classes[name])) for name in idx}


class LabelHeads:
    """The heads, the hook that keeps layer ``layer``'s output, and their own AdamW (the run's lr schedule)."""

    def __init__(self, model: torch.nn.Module, cfg: TrainConfig, device: torch.device):
        layer, layers = cfg.label_layer, model.language_model.model.layers
        if not 0 <= layer < len(layers):
            raise InputError(f"--label-layer {layer} is not a layer of this model (0 to {len(layers) - 1})")
        hidden = model.cfg.llm.hidden_size
        with torch.random.fork_rng(devices=[]):  # the heads' start is the run's seed's, whatever ran before
            torch.manual_seed(cfg.seed)
            # in HEADS' order, whatever the order asked: the optimizer's state follows the parameters' order
            self.heads = torch.nn.ModuleDict(
                {n: torch.nn.Linear(hidden, k) for n, k in HEADS.items() if n in cfg.label_sets}
            )
        self.heads.to(device)
        self.optimizer = torch.optim.AdamW(self.heads.parameters(), betas=cfg.betas, weight_decay=0.0)
        self._kept: torch.Tensor | None = None
        self._hook = layers[layer].register_forward_hook(self._keep)

    def _keep(self, _module, _args, output: torch.Tensor) -> None:
        self._kept = output

    def read(self, samples: list, device: torch.device) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Each label set's (logits, classes) at the samples' labelled tokens. Call after the model's forward on
        the same samples: it reads (and lets go of) the layer output that forward left."""
        kept, self._kept = self._kept, None
        out = {}
        for name, (idx, classes) in label_targets(samples).items():
            if kept is None:
                raise RuntimeError("the labelled layer did not run in this step's forward")
            out[name] = self.heads[name](kept.index_select(0, idx.to(device)).float()), classes.to(device)
        return out

    def loss(self, samples: list, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        """The mean cross-entropy of every label set the samples hold (summed over the sets), and each set's token
        accuracy; 0 when no sample is labelled."""
        total = torch.zeros((), device=device)
        metrics: dict[str, float] = {}
        for name, (logits, classes) in self.read(samples, device).items():
            total = total + F.cross_entropy(logits, classes)
            metrics[f"label_{name}_acc"] = float((logits.argmax(-1) == classes).float().mean())
        return total, metrics

    def step(self, lr: float, d: distributed.Dist) -> None:
        if d.enabled:  # every rank holds the whole heads: average their gradients as the model's are
            for p in self.heads.parameters():
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad, op=torch.distributed.ReduceOp.AVG)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def files(self) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, dict]]:
        """What a checkpoint keeps, as :func:`write_model_dir` takes it: the heads' weights and optimizer tensors
        (one safetensors file) and the optimizer's other values (one JSON file)."""
        tensors, meta = ckpt.flatten_optimizer(self.optimizer.state_dict())
        tensors = {f"optimizer.{k}": v for k, v in tensors.items()}
        tensors |= {f"heads.{k}": v.detach().cpu().contiguous() for k, v in self.heads.state_dict().items()}
        return {FILE: tensors}, {META: meta}

    def load(self, checkpoint: Path) -> None:
        if not (checkpoint / FILE).exists():
            raise InputError(
                f"{checkpoint} was trained without --label-weight: resume it without, or start a new --out"
            )
        tensors = load_file(str(checkpoint / FILE))
        saved_sets = sorted({k.split(".")[1] for k in tensors if k.startswith("heads.")})
        if saved_sets != sorted(self.heads):
            raise InputError(f"{checkpoint} was trained with the label sets {', '.join(saved_sets)}: resume it with "
                             f"--label-sets {','.join(saved_sets)}, or start a new --out")  # fmt: skip
        self.heads.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("heads.")})
        saved = ckpt.unflatten_optimizer(
            {k[10:]: v for k, v in tensors.items() if k.startswith("optimizer.")},
            json.loads((checkpoint / META).read_text()),
        )
        saved["state"] = {int(k): v for k, v in saved["state"].items()}
        self.optimizer.load_state_dict(saved)

    def close(self) -> None:
        self._hook.remove()
