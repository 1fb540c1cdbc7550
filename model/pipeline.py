"""SigmaPipeline: load once, generate many. The one object the CLI, the web UI and the tests call.

>>> pipe = load_pipeline("tiny")
>>> result = pipe("a man <id> <img1> with a dog <subject> <img2>", images=[man, dog], seed=7)
>>> result.image.save("out.png")
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image

from .arch.autoencoder import AutoEncoder
from .arch.bagel import Bagel
from .config import ArchConfig, GenerationConfig
from .engine import BlockInputs, Context, prefill, query_velocity
from .errors import InputError
from .images import open_image, patchify, resize, to_pil, to_rgb, to_tensor, unpatchify
from .prompt import InterleavedPrompt, image_number, parse_prompt, prompt_from_inputs
from .sampler import denoise
from .sequence import GuidancePlans, ImageGeometry, released_plans, trained_plans
from .tokens import Tokenizer

if TYPE_CHECKING:
    from .multisubject import Insertion

log = logging.getLogger(__name__)

ImageLike = Image.Image | str | Path
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class PreparedImage:
    """One given image after RGB conversion and the layout's resizes."""

    vae_image: Image.Image
    vit_image: Image.Image | None
    geometry: ImageGeometry


@dataclass
class GenerationResult:
    image: Image.Image
    latents: torch.Tensor  # final clean latent tokens [N, P], float32
    seed: int | None
    config: GenerationConfig
    layout: str
    size: tuple[int, int]  # (height, width)
    seconds: float
    warnings: tuple[str, ...] = ()
    plans: GuidancePlans | None = field(default=None, repr=False)
    contexts: dict[str, Context] = field(default_factory=dict, repr=False)


class SigmaPipeline:
    """Holds the network, the autoencoder and the tokenizer; ``__call__`` runs one generation."""

    def __init__(
        self,
        model: Bagel,
        vae: AutoEncoder,
        tokenizer: Tokenizer,
        *,
        name: str = "custom",
        device: torch.device | str | None = None,
        mode: str = "cpu",
    ):
        self.model, self.vae, self.tokenizer, self.name, self.mode = model, vae, tokenizer, name, mode
        # the execution device: where inputs go; with a device map the weights may live elsewhere
        self._device = torch.device(device) if device is not None else model.vae2llm.weight.device

    @property
    def arch(self) -> ArchConfig:
        return self.model.cfg

    @property
    def device(self) -> torch.device:
        return self._device

    def __call__(
        self,
        prompt: str | InterleavedPrompt | None = None,
        images: Sequence[ImageLike] | Mapping[str, ImageLike] | None = None,
        *,
        inputs: Sequence[str | ImageLike] | None = None,
        config: GenerationConfig | None = None,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        progress: ProgressFn | None = None,
        keep_contexts: bool = False,
        insertion: Insertion | None = None,
        batch_branches: bool = True,
        **settings,
    ) -> GenerationResult:
        """Generate one image.

        Args:
            prompt: interleaved prompt with ``<imgN>`` placeholders and attribute tokens (see :mod:`model.prompt`),
                or an already parsed :class:`~model.prompt.InterleavedPrompt` (its image indices refer to ``images``).
            images: the referenced images, as a list (img1, img2, ...) or a mapping ``{"img1": ...}``.
            inputs: instead of prompt/images, an explicit interleaved list of strings and images (used verbatim).
            config: sampler settings; keyword ``settings`` override its fields (e.g. ``steps=30, seed=7``).
            generator: CPU generator for every random draw (VAE posterior samples, then the initial noise);
                default: seeded from ``config.seed`` (or a fresh random seed, reported in the result).
            latents: initial noise [N, P] instead of drawing it.
            progress: called as ``progress(step, total)`` after each denoising step.
            batch_branches: run the guidance branches of a step as one forward (False: one forward each, the
                plain reference path the benchmark compares against).
            insertion: keep a background image outside a region (:class:`~model.multisubject.Insertion`): after
                every step the latent there is replaced by the background latent noised to that step.
        """
        cfg = (config or GenerationConfig()).replace(**settings) if settings else (config or GenerationConfig())
        start = time.perf_counter()
        # 1. Validate the prompt and images.
        parsed, pil_images = self.check_inputs(prompt, images, inputs)
        layout = cfg.layout or self.arch.default_layout
        group_mask = self.arch.group_mask if cfg.group_mask is None else cfg.group_mask
        # 2. Resize the images for this layout.
        prepared = [self.prepare_image(img, layout) for img in pil_images]
        # 3. Lay out the three guidance contexts and fix the output size.
        plans = self.plan(parsed, prepared, layout)
        size = self.output_size(cfg, parsed, prepared)
        grid = (size[0] // self.arch.pixels_per_token, size[1] // self.arch.pixels_per_token)
        self.check_context(plans, grid)
        seed, generator = self._generator(cfg, generator)
        # 4. Encode the references (VAE posterior samples draw from the generator, in context order).
        block_inputs = self.encode_references(plans, prepared, generator)
        # 5. Prefill the KV caches once.
        contexts = self.prefill_contexts(plans, block_inputs, grid[0] * grid[1] + 2, group_mask)
        # 6. Denoise.
        x = self.initial_noise(grid, generator, latents)
        blend = None
        if insertion is not None:
            x, blend = self.background_blend(insertion, x, size, grid, generator)
        x = denoise(x, self._velocity_fn(contexts, grid, batch_branches), cfg, self._callback(progress), blend)
        # 7. Decode.
        image = self.decode(x, grid)
        return GenerationResult(
            image=image,
            latents=x,
            seed=seed,
            config=cfg,
            layout=layout,
            size=size,
            seconds=time.perf_counter() - start,
            warnings=parsed.warnings,
            plans=plans,
            contexts=contexts if keep_contexts else {},
        )

    # -- step 1 ------------------------------------------------------------------------------------------------
    def check_inputs(
        self,
        prompt: str | None,
        images: Sequence[ImageLike] | Mapping[str, ImageLike] | None,
        inputs: Sequence[str | ImageLike] | None,
    ) -> tuple[InterleavedPrompt, list[Image.Image]]:
        if inputs is not None:
            if prompt is not None or images:
                raise InputError("Give either a prompt with images, or an interleaved input list, not both")
            parsed = prompt_from_inputs(inputs)
            return parsed, [_load(x) for x in inputs if not isinstance(x, str)]
        if prompt is None:
            raise InputError("No prompt given")
        if isinstance(prompt, InterleavedPrompt):
            values = list(images.values()) if isinstance(images, Mapping) else list(images or [])
            if any(p.index >= len(values) for p in prompt.images):
                raise InputError(f"The parsed prompt refers to more images than the {len(values)} given")
            return prompt, [_load(v) for v in values]

        if isinstance(images, Mapping):
            names = [image_number(k) for k in images]
            values = list(images.values())
        else:
            values = list(images or [])
            names = None
        parsed = parse_prompt(prompt, len(values), names=names)
        for w in parsed.warnings:
            log.warning(w)
        return parsed, [_load(v) for v in values]

    # -- step 2 ------------------------------------------------------------------------------------------------
    def prepare_image(self, img: Image.Image, layout: str) -> PreparedImage:
        arch = self.arch
        vae_image = resize(img, arch.vae_transform)
        grid_px = arch.pixels_per_token
        latent_hw = (vae_image.height // grid_px, vae_image.width // grid_px)
        if layout == "released":
            if arch.vit is None:
                return PreparedImage(vae_image, None, ImageGeometry(latent_hw))
            vit_image = resize(vae_image, arch.vit_transform)  # the released double resize
        else:
            vit_image = resize(img, arch.vit_slot_transform)  # training: ViT transform of the original
        p = arch.vit.patch_size if arch.vit is not None else arch.vit_slot_transform.stride
        return PreparedImage(
            vae_image, vit_image, ImageGeometry(latent_hw, (vit_image.height // p, vit_image.width // p))
        )

    # -- step 3 ------------------------------------------------------------------------------------------------
    def plan(self, parsed: InterleavedPrompt, prepared: list[PreparedImage], layout: str) -> GuidancePlans:
        geometry = [p.geometry for p in prepared]
        segment, ids = self.tokenizer.segment, self.tokenizer.ids
        if layout == "released":
            return released_plans(parsed.parts, geometry, segment, ids)
        return trained_plans(parsed.parts, geometry, segment, ids, slot_is_zero=self.arch.vit is None)

    def output_size(
        self, cfg: GenerationConfig, parsed: InterleavedPrompt, prepared: list[PreparedImage]
    ) -> tuple[int, int]:
        """``cfg.size`` if given, else the last placed image's VAE size (released rule), else the largest square."""
        if cfg.size is not None:
            size = cfg.size
        elif parsed.images:
            last = prepared[parsed.images[-1].index].vae_image
            size = (last.height, last.width)
        else:
            size = (self.arch.max_image_size, self.arch.max_image_size)
        stride, limit = self.arch.pixels_per_token, self.arch.max_image_size
        h, w = size
        if h % stride or w % stride:
            hint = f"{max(stride, w // stride * stride)}x{max(stride, h // stride * stride)}"
            raise InputError(f"--size {w}x{h} is not a multiple of {stride} on both sides; try {hint}")
        if h > limit or w > limit:
            raise InputError(f"--size {w}x{h} is over this model's limit of {limit} pixels per side")
        return size

    def check_context(self, plans: GuidancePlans, grid: tuple[int, int]) -> None:
        total = plans.full.length + grid[0] * grid[1] + 2
        if total > self.arch.max_context_tokens:
            raise InputError(
                f"The prompt needs {total} tokens (text, references and the output) but the context holds "
                f"{self.arch.max_context_tokens}; use fewer or smaller reference images"
            )

    # -- step 4 ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_references(
        self, plans: GuidancePlans, prepared: list[PreparedImage], generator: torch.Generator
    ) -> BlockInputs:
        latents, patches = {}, {}
        p, c = self.arch.latent_patch_size, self.arch.vae.z_channels
        for block in plans.full.blocks:
            img = prepared[block.image] if block.image >= 0 else None
            if block.kind == "vae":
                z = self.vae.encode(to_tensor(img.vae_image)[None], generator=generator)[0]  # [C, H/8, W/8]
                latents[block.part] = patchify(z.float(), p)  # [h*w, p*p*C]
                assert latents[block.part].shape[1] == p * p * c
            elif block.kind == "vit" and not block.zero_input and self.arch.vit is not None:
                patches[block.part] = patchify(to_tensor(img.vit_image), self.arch.vit.patch_size)
        return BlockInputs(latents, patches)

    # -- step 5 ------------------------------------------------------------------------------------------------
    def prefill_contexts(
        self, plans: GuidancePlans, inputs: BlockInputs, query_tokens: int, group_mask: bool
    ) -> dict[str, Context]:
        ids = self.tokenizer.ids

        def run(plan, reuse=None) -> Context:
            return prefill(
                self.model,
                plan,
                inputs,
                ids,
                device=self.device,
                query_tokens=query_tokens,
                group_mask=group_mask,
                reuse=reuse,
            )

        full = run(plans.full)
        text = full if plans.text_dropped is plans.full else run(plans.text_dropped, reuse=full)
        image = full if plans.image_dropped is plans.full else run(plans.image_dropped)
        return {"full": full, "text": text, "image": image}

    # -- step 6 ------------------------------------------------------------------------------------------------
    def initial_noise(
        self, grid: tuple[int, int], generator: torch.Generator, latents: torch.Tensor | None
    ) -> torch.Tensor:
        shape = (grid[0] * grid[1], self.arch.patch_latent_dim)
        if latents is not None:
            if tuple(latents.shape) != shape:
                raise InputError(f"latents must have shape {shape} for this output size, got {tuple(latents.shape)}")
            return latents.float().to(self.device)
        return torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32).to(self.device)

    @torch.no_grad()
    def background_blend(self, insertion: Insertion, x: torch.Tensor, size, grid, generator: torch.Generator):
        """Blended diffusion: the state outside the region follows the background latent noised to each step.

        A latent token is kept from the background only when its whole pixel cell lies outside the region, so
        the generated region never loses pixels at its border. Returns the initial state and the blend function.
        """
        h, w = size
        if insertion.keep.shape != (h, w):
            raise InputError(
                f"The insertion mask is {insertion.keep.shape[1]}x{insertion.keep.shape[0]}, the output is {w}x{h}"
            )
        bg = insertion.background.convert("RGB")
        bg = bg if bg.size == (w, h) else bg.resize((w, h), Image.BICUBIC)
        z = self.vae.encode(to_tensor(bg)[None])[0]  # posterior mean: the background itself, no random draw
        x0 = patchify(z.float(), self.arch.latent_patch_size).to(x.device)
        s = self.arch.pixels_per_token
        cells = torch.from_numpy(insertion.keep).reshape(grid[0], s, grid[1], s).permute(0, 2, 1, 3)
        keep = cells.reshape(grid[0] * grid[1], s * s).all(dim=1)[:, None].to(x.device)  # [N, 1]
        eps = torch.randn(x.shape, generator=generator, device=generator.device).to(x.device)

        def blend(state: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return torch.where(keep, (1 - t) * x0 + t * eps, state)

        return torch.where(keep, eps, x), blend

    def _velocity_fn(self, contexts: dict[str, Context], grid: tuple[int, int], batched: bool = True):
        ids = self.tokenizer.ids

        def velocity(x: torch.Tensor, t: torch.Tensor, branches: tuple[str, ...]) -> dict[str, torch.Tensor]:
            unique: list[Context] = []
            for name in branches:  # identical contexts give identical velocities: run each once
                if all(contexts[name] is not u for u in unique):
                    unique.append(contexts[name])
            if batched:
                outs = query_velocity(self.model, unique, x, t, grid, ids, self.device)
            else:
                outs = [query_velocity(self.model, [c], x, t, grid, ids, self.device)[0] for c in unique]
            return {name: outs[next(i for i, u in enumerate(unique) if u is contexts[name])] for name in branches}

        return velocity

    @staticmethod
    def _callback(progress: ProgressFn | None):
        if progress is None:
            return None
        return lambda step, total, _x: progress(step, total)

    @staticmethod
    def _generator(cfg: GenerationConfig, generator: torch.Generator | None) -> tuple[int | None, torch.Generator]:
        if generator is not None:
            return cfg.seed, generator
        seed = cfg.seed if cfg.seed is not None else secrets.randbelow(2**31)
        return seed, torch.Generator().manual_seed(seed)

    # -- step 7 ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, x: torch.Tensor, grid: tuple[int, int]) -> Image.Image:
        return to_pil(self.decode_raw(x, grid)[0])

    @torch.no_grad()
    def decode_raw(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Latent tokens [N, P] -> decoder output [1, 3, H, W] (before clamping)."""
        z = unpatchify(x.float(), grid[0], grid[1], self.arch.latent_patch_size, self.arch.vae.z_channels)
        return self.vae.decode(z[None])


def _load(x: ImageLike) -> Image.Image:
    if isinstance(x, Image.Image):
        return to_rgb(x)
    if isinstance(x, str | Path):
        return to_rgb(open_image(x))
    raise InputError(f"Expected an image or a path, got {type(x).__name__}")
