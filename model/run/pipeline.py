"""SigmaPipeline: load once, generate many. The one object the CLI, the web UI and the tests call.

>>> pipe = load_pipeline("tiny")
>>> result = pipe("a man <id> <img1> with a dog <subject> <img2>", images=[man, dog], seed=7)
>>> result.image.save("out.png")
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from ..arch.autoencoder import AutoEncoder
from ..arch.bagel import Bagel
from ..config import ArchConfig, GenerationConfig
from ..errors import InputError, SigmaError
from ..files import check_output_file, check_png_name
from ..images import patchify, resize, save_png, to_pil, to_tensor, unpatchify
from ..request.build import GenerationRequest, ImageLike, build_request, check_size
from ..request.multisubject import Insertion, composite
from ..request.prompt import InterleavedPrompt
from ..request.record import GenerationRecord, record_of
from ..request.structure import ControlSpec
from ..request.tokens import Tokenizer
from .accel import Acceleration, check_accel, compiled_regions
from .batching import Job, denoise_jobs
from .engine import BlockInputs, Context, prefill
from .sequence import GuidancePlans, ImageGeometry, released_plans, trained_plans
from .think import think

log = logging.getLogger(__name__)

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
    seed: int  # the seed actually used (also in ``config.seed``)
    config: GenerationConfig  # the settings as generated: seed and size filled in
    layout: str
    size: tuple[int, int]  # (height, width)
    seconds: float
    warnings: tuple[str, ...] = ()
    request: GenerationRequest | None = field(default=None, repr=False)
    record: GenerationRecord | None = field(default=None, repr=False)
    plans: GuidancePlans | None = field(default=None, repr=False)
    contexts: dict[str, Context] = field(default_factory=dict, repr=False)
    evaluations: int = 0  # branch evaluations of the denoising loop (one context for one step = one)
    plan: str | None = None  # think mode: the plan the model wrote before drawing (model.run.think)

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the PNG with its record, atomically; an existing file is refused unless ``overwrite``."""
        info = self.record.png_info() if self.record else None
        return save_png(self.image, check_output_file(check_png_name(path, "save()"), overwrite), info)


def check_finite(x: torch.Tensor, stage: str) -> None:
    """Refuse a latent or picture holding NaN or inf: saved, it would be a black (or garbage) PNG with exit 0."""
    if not bool(torch.isfinite(x).all()):
        raise SigmaError(
            f"the {stage} produced non-finite values (NaN/inf), so no image was made: try lower guidance "
            "(--cfg-text, --cfg-img), a --shift nearer the default 3, or another --seed"
        )


SETTINGS = (*(f.name for f in dataclasses.fields(GenerationConfig)), "speed")  # speed: a guidance_every preset
CALL_ARGUMENTS = ("prompt", "images", "inputs", "config", "controls", "generator", "latents", "progress")


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
        source: str | None = None,
    ):
        self.model, self.vae, self.tokenizer, self.name, self.mode = model, vae, tokenizer, name, mode
        self.source = source or name  # what load_pipeline takes to load this model again (stored in records)
        self.mode_reason = ""
        self.chunked_prefill = False  # True: one block per prefill forward, the released code's way (benchmarks)
        self.acceleration = Acceleration()  # CUDA graphs / compiled layer regions of the denoising step
        self.regions = None  # the compiled layer regions when ``acceleration.compile``
        # a torch.distributed process group: its ranks share each step's guidance branches (model.run.parallel)
        self.branch_group = None
        # the execution device: where inputs go; with a device map the weights may live elsewhere
        self._device = torch.device(device) if device is not None else model.vae2llm.weight.device

    @property
    def arch(self) -> ArchConfig:
        return self.model.cfg

    def accelerate(self, acceleration: Acceleration) -> SigmaPipeline:
        """Use these speed-ups for the denoising steps of later generations (:mod:`model.run.accel`); the same
        function is computed. Refused where the device or the loading mode cannot run them."""
        check_accel(acceleration, self.device.type, self.mode)
        same_compile = (acceleration.compile, acceleration.compile_mode) == (
            self.acceleration.compile,
            self.acceleration.compile_mode,
        )
        if not same_compile:
            self.regions = compiled_regions(acceleration.compile_mode) if acceleration.compile else None
        self.acceleration = acceleration
        return self

    @property
    def device(self) -> torch.device:
        return self._device

    def __call__(
        self,
        prompt: str | InterleavedPrompt | GenerationRequest | None = None,
        images: Sequence[ImageLike] | Mapping[str, ImageLike] | None = None,
        *,
        inputs: Sequence[str | ImageLike] | None = None,
        config: GenerationConfig | None = None,
        controls: ControlSpec | None = None,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        progress: ProgressFn | None = None,
        **settings,
    ) -> GenerationResult:
        """Generate one image.

        Args:
            prompt: interleaved prompt with ``<imgN>`` placeholders and attribute tokens (see
                :mod:`model.request.prompt`), parts already laid out (:class:`~model.request.prompt.InterleavedPrompt`,
                indices into ``images``), or a
                :class:`~model.request.build.GenerationRequest` built by :func:`~model.request.build.build_request`.
            images: the referenced images, as a list (img1, img2, ...) or a mapping ``{"img1": ...}``.
            inputs: instead of prompt/images, an explicit interleaved list of strings and images (used verbatim).
            config: sampler settings; keyword ``settings`` override its fields (e.g. ``steps=30, seed=7``), and
                ``speed="fast"`` sets ``guidance_every`` from :data:`~model.config.SPEEDS` as ``--speed`` does.
            controls: structure controls (:class:`~model.request.structure.ControlSpec`).
            generator: CPU generator for every random draw (VAE posterior samples, then the initial noise);
                default: seeded from ``config.seed`` (or a fresh random seed, reported in the result).
            latents: initial noise [N, P] instead of drawing it.
            progress: called as ``progress(step, steps)``; the last call, after decoding, is ``(steps, steps)``.
        """
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            close = difflib.get_close_matches(unknown[0], (*SETTINGS, *CALL_ARGUMENTS), n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; settings are: {', '.join(SETTINGS)}"
            raise InputError(f"Unknown argument '{unknown[0]}'{hint}")
        if isinstance(prompt, GenerationRequest):
            if images or inputs is not None or controls is not None or config is not None:
                raise InputError("A GenerationRequest already holds its images, controls and settings")
            if "size" in settings:  # the request's control images were rendered and checked at its size
                raise InputError("size is fixed when a request is built: pass it to build_request")
            request = prompt.replace(config=prompt.config.replace(**settings)) if settings else prompt
        else:
            cfg = (config or GenerationConfig()).replace(**settings)
            request = build_request(prompt, images, arch=self.arch, config=cfg, controls=controls, inputs=inputs)
            for w in request.warnings:  # a caller that builds its own request shows them itself
                log.warning(w)
        return self._generate(request, generator, latents, progress)

    def _generate(
        self,
        request: GenerationRequest,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        progress: ProgressFn | None = None,
        *,
        keep_contexts: bool = False,
        batch_branches: bool = True,
    ) -> GenerationResult:
        """Run a request. ``keep_contexts`` keeps the KV caches in the result; ``batch_branches=False`` runs the
        guidance branches one forward each (the plain reference path the tests and the benchmark compare)."""
        job = self._begin(request, generator, latents, progress)
        [x], [evaluations] = denoise_jobs(self, [job], batch_branches)
        return self._finish(job, x, evaluations, keep_contexts)

    def generate_batch(
        self, requests: Sequence[GenerationRequest], progress: ProgressFn | None = None
    ) -> list[GenerationResult]:
        """Several requests of the same output size and schedule (steps, shift) at once: each is prefilled on its
        own, then one forward per step serves all of them (their query rows batched, each against its own
        caches), then each is decoded. Each result is the one the request gives alone, to float rounding.
        ``progress(step, steps)`` follows the shared loop. A server's queue is the caller
        (:mod:`model.run.batching`)."""
        if not requests:
            return []
        jobs = [self._begin(r, None, None, progress if k == 0 else None) for k, r in enumerate(requests)]
        xs, evaluations = denoise_jobs(self, jobs)
        return [self._finish(job, x, e, False) for job, x, e in zip(jobs, xs, evaluations, strict=True)]

    def _begin(self, request: GenerationRequest, generator, latents, progress: ProgressFn | None) -> Job:
        """Steps 1 to 4 and the initial state: everything before the denoising loop."""
        cfg = request.config
        start = time.perf_counter()
        layout = cfg.layout or self.arch.default_layout
        group_mask = self.arch.group_mask if cfg.group_mask is None else cfg.group_mask
        # 1. Check the request against this model; resize the images for this layout.
        check_size(request.size, self.arch)
        prepared = [self.prepare_image(img.image, layout) for img in request.images]
        # 2. Lay out the three guidance contexts.
        plans = self.plan(InterleavedPrompt(request.parts), prepared, layout)
        size = request.size
        grid = (size[0] // self.arch.pixels_per_token, size[1] // self.arch.pixels_per_token)
        self.check_context(plans, grid)
        seed, generator = self._generator(cfg, generator)
        # 3. Encode the references (VAE posterior samples draw from the generator, in context order).
        block_inputs = self.encode_references(plans, prepared, generator)
        plans, plan = think(self, plans, block_inputs, group_mask, grid[0] * grid[1] + 2, cfg.think)  # its plan first
        # 4. Prefill the KV caches once.
        contexts = self.prefill_contexts(plans, block_inputs, grid[0] * grid[1] + 2, group_mask)
        # 5. The initial state (denoised by model.run.batching.denoise_jobs).
        x = self.initial_noise(grid, generator, latents)
        blend = None
        if request.insertion is not None:
            x, blend = self.background_blend(request.insertion, x, size, grid, generator)
        return Job(request, layout, plans, contexts, grid, seed, x, blend, start, progress, plan)

    def _finish(self, job: Job, x: torch.Tensor, evaluations: int, keep_contexts: bool) -> GenerationResult:
        """Step 6: decode (a non-finite picture is an error, never a black PNG) and the result with its record."""
        request, cfg = job.request, job.request.config
        check_finite(x, "sampler")
        image = self.decode(x, job.grid)
        if request.insertion is not None:  # the kept background is the original's pixels, not their reconstruction
            image = composite(image, request.insertion)
        if job.progress is not None:
            job.progress(cfg.steps, cfg.steps)
        record = record_of(request, job.seed, model=self.source, mode=self.mode, layout=job.layout, plan=job.plan)
        return GenerationResult(
            image=image,
            latents=x,
            seed=job.seed,
            config=cfg.replace(seed=job.seed),
            layout=job.layout,
            size=request.size,
            seconds=time.perf_counter() - job.start,
            warnings=request.warnings,
            request=request,
            record=record,
            plans=job.plans,
            contexts=job.contexts if keep_contexts else {},
            evaluations=evaluations,
            plan=job.plan,
        )

    # -- step 1 ------------------------------------------------------------------------------------------------
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

    # -- step 2 ------------------------------------------------------------------------------------------------
    def plan(self, parsed: InterleavedPrompt, prepared: list[PreparedImage], layout: str) -> GuidancePlans:
        geometry = [p.geometry for p in prepared]
        segment, ids = self.tokenizer.segment, self.tokenizer.ids
        if layout == "released":
            return released_plans(parsed.parts, geometry, segment, ids)
        return trained_plans(parsed.parts, geometry, segment, ids, slot_is_zero=self.arch.vit is None)

    def check_context(self, plans: GuidancePlans, grid: tuple[int, int]) -> None:
        total = plans.full.length + grid[0] * grid[1] + 2
        if total > self.arch.max_context_tokens:
            raise InputError(
                f"The prompt needs {total} tokens (text, references and the output) but the context holds "
                f"{self.arch.max_context_tokens}; use fewer or smaller reference images"
            )

    # -- step 3 ------------------------------------------------------------------------------------------------
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

    # -- step 4 ------------------------------------------------------------------------------------------------
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
                scope=self.arch.group_mask_scope,
                reuse=reuse,
                chunked=self.chunked_prefill,
            )

        full = run(plans.full)
        text = full if plans.text_dropped is plans.full else run(plans.text_dropped, reuse=full)
        image = full if plans.image_dropped is plans.full else run(plans.image_dropped)
        return {"full": full, "text": text, "image": image}

    # -- step 5 ------------------------------------------------------------------------------------------------
    def initial_noise(
        self, grid: tuple[int, int], generator: torch.Generator, latents: torch.Tensor | None
    ) -> torch.Tensor:
        shape = (grid[0] * grid[1], self.arch.patch_latent_dim)
        if latents is not None:
            if tuple(latents.shape) != shape:
                raise InputError(f"latents must have shape {shape} for this output size, got {tuple(latents.shape)}")
            if not torch.isfinite(latents).all():
                raise InputError("latents must be finite numbers: the initial noise holds NaN or inf")
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

    @staticmethod
    def _generator(cfg: GenerationConfig, generator: torch.Generator | None) -> tuple[int | None, torch.Generator]:
        if generator is not None:
            return cfg.seed, generator
        seed = cfg.seed if cfg.seed is not None else secrets.randbelow(2**31)
        return seed, torch.Generator().manual_seed(seed)

    # -- step 6 ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, x: torch.Tensor, grid: tuple[int, int]) -> Image.Image:
        decoded = self.decode_raw(x, grid)
        check_finite(decoded, "decoder")
        return to_pil(decoded[0])

    @torch.no_grad()
    def decode_raw(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Latent tokens [N, P] -> decoder output [1, 3, H, W] (before clamping)."""
        z = unpatchify(x.float(), grid[0], grid[1], self.arch.latent_patch_size, self.arch.vae.z_channels)
        return self.vae.decode(z[None])
