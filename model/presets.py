"""The named architectures: the released BAGEL-7B-MoT, SIGMA's post-trained 7B, the tiny test model and the shapes
world's model. ``PRESETS`` maps each name (``--preset``, ``sigma bench --preset``) to its constructor."""

from __future__ import annotations

from .config import SIGMA_SKILLS, ArchConfig, LLMConfig, ResizeSpec, VAEConfig, ViTConfig


def bagel_7b_mot() -> ArchConfig:
    """BAGEL-7B-MoT as released by ByteDance-Seed (ViT included)."""
    return ArchConfig(skills=())  # text and edits: no attribute tokens, layouts or subjects


def sigma_7b() -> ArchConfig:
    """SIGMA post-trained weights: BAGEL-7B-MoT without the ViT, trained on the interleaved layout."""
    return ArchConfig(vit=None, default_layout="trained", skills=SIGMA_SKILLS)


def tiny() -> ArchConfig:
    """A toy model in the real architecture, for tests and smoke runs (random weights: its output is noise)."""
    return ArchConfig(
        llm=LLMConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128, vocab_size=320),
        vit=ViTConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_patches_per_side=8),
        vae=VAEConfig(ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1, z_channels=4, scale_factor=0.6, shift_factor=0.08),
        max_latent_size=8,
        vae_transform=ResizeSpec(128, 64, 16),
        vit_transform=ResizeSpec(112, 56, 14),
        vit_slot_transform=ResizeSpec(112, 56, 14),
    )


# Routing-map levels a subject in the shapes world: its 8-channel latents blur levels 10 apart (docs/SIGMAGEN.md), and
# it places at most 5 subjects (50..250).
SHAPES_ROUTING_STEP = 50


def shapes() -> ArchConfig:
    """The shapes world's model: the real architecture at toy size, trained on a CPU by ``sigma shapes train``.

    64 px pictures through a 4x autoencoder with 8 latent channels under the 2 x 2 latent patch: 8 x 8 latent tokens
    a picture, 8 px a token (docs/SHAPES.md). No ViT (as SIGMA), the trained layout with 2x2-token ViT slots, both
    of SIGMA's mechanisms on, and SIGMA-GEN's subjects: routing maps at 50 levels a subject and identity sheets two
    cells a column, so that five subjects keep at least 2 x 2 tokens each.
    """
    return ArchConfig(
        llm=LLMConfig(
            hidden_size=192, num_layers=5, num_heads=6, num_kv_heads=2, intermediate_size=384, vocab_size=448
        ),
        vit=None,
        vae=VAEConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, z_channels=8, scale_factor=1.0, shift_factor=0.0),
        max_latent_size=8,
        vae_transform=ResizeSpec(64, 32, 8),
        vit_slot_transform=ResizeSpec(28, 28, 14),
        max_context_tokens=4096,
        group_mask=True,
        attribute_projection=True,
        default_layout="trained",
        routing_step=SHAPES_ROUTING_STEP,
        sheet_rows=2,
        skills=("attribute_tokens", "boxes", "subjects"),  # the five families (layouts: box pictures) and SIGMA-GEN
    )


PRESETS = {"bagel-7b-mot": bagel_7b_mot, "sigma-7b": sigma_7b, "tiny": tiny, "shapes": shapes}
