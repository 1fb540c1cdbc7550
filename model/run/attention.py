"""Attention backends and the KV cache.

* :class:`KVCache` holds one context's keys and values for every layer in one preallocated tensor, with room at
  the end for the generation query: the prompt's K/V are written once at prefill and the query's K/V are
  written into the tail slot at each step, so the cache is never copied or concatenated while denoising.
* :class:`PrefillAttention` appends one block to a cache (chunked prefill, with a mask when needed).
* :class:`QueryAttention` runs the generation query of several guidance branches at once: the projections see
  one batched matrix, attention runs per branch against that branch's cache.
* :class:`PackedAttention` is the cache-free dense-mask attention of the training forward.

Attention goes through ``torch.nn.functional.scaled_dot_product_attention`` (which picks flash / cuDNN /
memory-efficient kernels on a GPU), or through flash-attn when it is installed and the call needs no mask.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

try:  # optional: used when installed and importable, never required
    from flash_attn import flash_attn_func
except Exception as exc:  # noqa: BLE001 - a broken build raises anything from ImportError to OSError
    flash_attn_func = None
    if not isinstance(exc, ImportError):
        log.warning("flash-attn is installed but does not load (%s); using PyTorch SDPA", exc)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """q [Hq, n, d], k/v [Hkv, L, d] (GQA), mask bool [n, L] or None -> [n, Hq*d]."""
    hq, n, d = q.shape
    if mask is None and flash_attn_func is not None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        out = flash_attn_func(q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None])
        return out[0].reshape(n, hq * d)
    # enable_gqa lets the kernel read each key/value head for its query group: no expanded copy of the cache
    out = F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=mask, enable_gqa=k.shape[0] != hq)
    return out[0].transpose(0, 1).reshape(n, hq * d)


class KVCache:
    """Keys/values of one context, per layer [Hkv, capacity, d]; rows ``[:length]`` hold the prompt.

    Each layer's tensors are allocated on first write, on the device of the keys written, so a model spread
    over several GPUs keeps every layer's cache beside the layer.
    """

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, capacity: int, dtype: torch.dtype):
        self.shape = (num_kv_heads, capacity, head_dim)
        self.dtype = dtype
        self.k: list[torch.Tensor | None] = [None] * num_layers
        self.v: list[torch.Tensor | None] = [None] * num_layers
        self.length = 0

    @property
    def capacity(self) -> int:
        return self.shape[1]

    def _ensure(self, layer: int, device: torch.device) -> None:
        if self.k[layer] is None:
            self.k[layer] = torch.zeros(self.shape, device=device, dtype=self.dtype)
            self.v[layer] = torch.zeros(self.shape, device=device, dtype=self.dtype)

    def write(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """k/v: [n, Hkv, d] stored at rows start:start+n."""
        self._ensure(layer, k.device)
        n = k.shape[0]
        self.k[layer][:, start : start + n] = k.transpose(0, 1)
        self.v[layer][:, start : start + n] = v.transpose(0, 1)

    def keys_values(self, layer: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views [Hkv, stop, d] of the first ``stop`` rows (no copy)."""
        return self.k[layer][:, :stop], self.v[layer][:, :stop]

    def copy_prefix_from(self, other: KVCache, length: int) -> None:
        """Take the first ``length`` rows of another cache (a context that is a prefix of another; done once)."""
        for layer, (k, v) in enumerate(zip(other.k, other.v, strict=True)):
            if k is None:
                continue
            self._ensure(layer, k.device)
            self.k[layer][:, :length] = k[:, :length]
            self.v[layer][:, :length] = v[:, :length]
        self.length = length

    def rows(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Stored keys/values of a layer as [length, Hkv, d] (for inspection and tests)."""
        if self.k[layer] is None:
            empty = torch.zeros((0, self.shape[0], self.shape[2]), dtype=self.dtype)
            return empty, empty
        return self.k[layer][:, : self.length].transpose(0, 1), self.v[layer][:, : self.length].transpose(0, 1)


@dataclass
class PrefillAttention:
    """Append a block at rows ``start:start+n`` of ``cache``; ``mask`` is bool [n, start+n] or None."""

    cache: KVCache
    start: int
    mask: torch.Tensor | None

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        n = q.shape[0]
        stop = self.start + n
        self.cache.write(layer, self.start, k, v)
        mask = None if self.mask is None else self.mask.to(q.device)
        return sdpa(q.transpose(0, 1), *self.cache.keys_values(layer, stop), mask)


@dataclass
class QueryAttention:
    """The generation query of B branches, rows ordered [latents of b=0..B-1, then the 2 markers of each].

    Each branch attends fully to its own cache plus its own query block; the query's K/V go to the cache's
    tail slot (rows length : length+N+2), which the prompt never uses.
    """

    caches: list[KVCache]
    num_latents: int

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        n, b = self.num_latents, len(self.caches)
        outs_lat, outs_mark = [], []
        for i, cache in enumerate(self.caches):
            lat, mark = slice(i * n, (i + 1) * n), slice(b * n + 2 * i, b * n + 2 * i + 2)
            base = cache.length
            cache.write(layer, base, k[lat], v[lat])
            cache.write(layer, base + n, k[mark], v[mark])
            qb = torch.cat((q[lat], q[mark]), dim=0).transpose(0, 1)  # [Hq, n+2, d]
            stop = base + n + 2
            o = sdpa(qb, *cache.keys_values(layer, stop))
            outs_lat.append(o[:n])
            outs_mark.append(o[n:])
        return torch.cat(outs_lat + outs_mark, dim=0)


@dataclass
class PackedAttention:
    """Cache-free attention over a packed sequence with a dense bool mask [n, n] (training forward)."""

    mask: torch.Tensor

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return sdpa(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), self.mask.to(q.device))
