"""The FLUX-style autoencoder (``ae.safetensors``: keys ``encoder.*`` and ``decoder.*``, no prefix)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..config import VAEConfig

# The mid-block attention has one head as wide as the channels (512): flash and cuDNN attention take no such head,
# so its backends are pinned here and a caller that forces one for the language model (the device benchmark's
# cuDNN run) does not leave the autoencoder without a kernel.
_VAE_ATTENTION = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=c, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1 = _norm(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = _norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        if c_in != c_out:
            self.nin_shortcut = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        shortcut = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return shortcut + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all spatial positions (row-major)."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = _norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        hn = self.norm(x)
        q, k, v = (p(hn).reshape(b, 1, c, h * w).transpose(2, 3) for p in (self.q, self.k, self.v))  # [b,1,hw,c]
        with sdpa_kernel(_VAE_ATTENTION):
            o = F.scaled_dot_product_attention(q, k, v).transpose(2, 3).reshape(b, c, h, w)
        return x + self.proj_out(o)


class Downsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # pad right and bottom by one pixel


class Upsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Mid(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.block_1 = ResnetBlock(c, c)
        self.attn_1 = AttnBlock(c)
        self.block_2 = ResnetBlock(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        mult = (1, *cfg.ch_mult)
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        self.down = nn.ModuleList()
        for level in range(len(cfg.ch_mult)):
            c_in, c_out = cfg.ch * mult[level], cfg.ch * cfg.ch_mult[level]
            stage = nn.Module()
            stage.block = nn.ModuleList(
                ResnetBlock(c_in if b == 0 else c_out, c_out) for b in range(cfg.num_res_blocks)
            )
            if level != len(cfg.ch_mult) - 1:
                stage.downsample = Downsample(c_out)
            self.down.append(stage)
        c = cfg.ch * cfg.ch_mult[-1]
        self.mid = _Mid(c)
        self.norm_out = _norm(c)
        self.conv_out = nn.Conv2d(c, 2 * cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            for block in stage.block:
                h = block(h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))  # [b, 2*z, H/8, W/8]: mean || log-variance


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        c = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, c, 3, padding=1)
        self.mid = _Mid(c)
        up = []
        for level in reversed(range(len(cfg.ch_mult))):
            c_out = cfg.ch * cfg.ch_mult[level]
            stage = nn.Module()
            stage.block = nn.ModuleList(
                ResnetBlock(c if b == 0 else c_out, c_out) for b in range(cfg.num_res_blocks + 1)
            )
            if level != 0:
                stage.upsample = Upsample(c_out)
            c = c_out
            up.insert(0, stage)
        self.up = nn.ModuleList(up)  # indexed by resolution level; level len-1 runs first
        self.norm_out = _norm(c)
        self.conv_out = nn.Conv2d(c, cfg.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for stage in reversed(self.up):
            for block in stage.block:
                h = block(h)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def _no_tf32():
    """cuDNN would run the float32 convolutions in TF32 on Ampere and later; the reference is true float32."""
    return torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=False, allow_tf32=False)


class AutoEncoder(nn.Module):
    """``encode`` samples the posterior and returns scaled latents; ``decode`` inverts the scaling."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def encode(
        self, x: torch.Tensor, eps: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """x: [b, 3, H, W] in [-1, 1] -> scaled latent [b, z, H/8, W/8].

        The posterior is sampled with ``eps`` if given, else a standard-normal draw from ``generator``
        (on the generator's device), else the posterior mean is returned.
        """
        w = self.encoder.conv_in.weight
        with _no_tf32():
            moments = self.encoder(x.to(device=w.device, dtype=w.dtype))
        mean, logvar = moments.chunk(2, dim=1)
        if eps is None and generator is not None:
            eps = torch.randn(mean.shape, generator=generator, device=generator.device, dtype=torch.float32)
        z = mean if eps is None else mean + torch.exp(0.5 * logvar) * eps.to(device=mean.device, dtype=mean.dtype)
        return self.cfg.scale_factor * (z - self.cfg.shift_factor)

    def decode(self, z_scaled: torch.Tensor) -> torch.Tensor:
        """Scaled latent [b, z, h, w] -> image [b, 3, 8h, 8w] in about [-1, 1]."""
        w = self.decoder.conv_in.weight
        z = z_scaled.to(device=w.device, dtype=w.dtype) / self.cfg.scale_factor + self.cfg.shift_factor
        with _no_tf32():
            return self.decoder(z)
