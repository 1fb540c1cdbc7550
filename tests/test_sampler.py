"""Schedule, guidance gating and the CFG combination against the spec's reference values and formulas."""

from __future__ import annotations

import pytest
import torch

from sigma_studio.model.config import GenerationConfig
from sigma_studio.model.errors import InputError
from sigma_studio.model.run.sampler import StepScales, combine, denoise, step_scales, timesteps


def test_schedule_reference_values():
    t = timesteps(50, 3.0)
    assert t[0] == 1.0 and t[-1] == 0.0
    assert t[1].item() == pytest.approx(0.9931034, abs=1e-7)
    assert t[48].item() == pytest.approx(0.0588235, abs=1e-7)
    assert (t[:-1] - t[1:]).sum().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.all(t[:-1] > t[1:])
    assert timesteps(5, 3.0).tolist()[:4] == pytest.approx([1.0, 0.9, 0.75, 0.5])


def test_guidance_interval_counts_and_is_strict_on_the_left():
    cfg = GenerationConfig(cfg_interval=(0.4, 1.0))
    t = timesteps(50, 3.0)[:-1]
    assert sum(step_scales(float(x), cfg).text > 1 for x in t) == 41
    assert step_scales(0.4, cfg) == StepScales(1.0, 1.0)
    assert step_scales(1.0, cfg) == StepScales(4.0, 2.0)


def _rand(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))


def test_text_channel():
    v, vt, vi = _rand(6, 4), _rand(6, 4) * 0.5, _rand(6, 4) * 2
    out = combine(v, vt, vi, StepScales(4.0, 2.0), "text_channel", 0.0)
    u = vt + 4 * (v - vt)
    r = (v.norm(dim=-1, keepdim=True) / (u.norm(dim=-1, keepdim=True) + 1e-8)).clamp(0, 1)
    torch.testing.assert_close(out, vi + 2 * (u * r - vi))
    assert out.dtype == torch.float32


def test_global_and_channel():
    v, vt, vi = _rand(5, 3), _rand(5, 3), _rand(5, 3)
    w = vi + 2 * ((vt + 3 * (v - vt)) - vi)
    g = combine(v, vt, vi, StepScales(3.0, 2.0), "global", 0.0)
    torch.testing.assert_close(g, w * (v.norm() / (w.norm() + 1e-8)).clamp(0, 1))
    c = combine(v, vt, vi, StepScales(3.0, 2.0), "channel", 0.0)
    torch.testing.assert_close(
        c, w * (v.norm(dim=-1, keepdim=True) / (w.norm(dim=-1, keepdim=True) + 1e-8)).clamp(0, 1)
    )
    assert combine(v, vt, vi, StepScales(3.0, 2.0), "global", 1.0).equal(w)  # renorm_min 1 disables renorm


def test_image_guidance_needs_text_guidance():
    v = _rand(2, 2)
    assert combine(v, None, _rand(2, 2), StepScales(1.0, 2.0), "global", 0.0) is v


def test_global_renorm_keeps_bf16():
    v, vt = _rand(4, 4).bfloat16(), _rand(4, 4).bfloat16()
    assert combine(v, vt, None, StepScales(4.0, 1.0), "global", 0.0).dtype == torch.bfloat16


def test_denoise_integrates_a_constant_velocity_exactly():
    cfg = GenerationConfig(steps=6, cfg_text_scale=1.0)
    x0 = torch.ones(3, 2)
    seen = []
    out = denoise(x0, lambda x, t, br: {"full": torch.full_like(x, 2.0)}, cfg, lambda i, n, x: seen.append((i, n)))
    torch.testing.assert_close(out, x0 - 2.0)  # the dt sum to 1
    assert seen == [(i, 5) for i in range(1, 6)]


def test_requested_branches_follow_the_scales():
    cfg = GenerationConfig(steps=3, cfg_text_scale=4.0, cfg_img_scale=1.0, cfg_interval=(0.0, 1.0))
    calls = []

    def vel(x, t, branches):
        calls.append(branches)
        return {b: torch.zeros_like(x) for b in branches}

    denoise(torch.zeros(1, 1), vel, cfg)
    assert calls == [("full", "text")] * 2


@pytest.mark.parametrize(
    ("kw", "flag"),
    [
        ({"steps": 1}, "--steps"),
        ({"cfg_renorm_type": "local"}, "--renorm"),
        ({"cfg_interval": (0.6, 0.2)}, "--cfg-interval"),
    ],
)
def test_config_validation_names_the_flag(kw, flag):
    with pytest.raises(InputError, match=flag):
        GenerationConfig(**kw)


def test_guidance_gate_compares_in_float32():
    """With 12 steps the 10th time is float32(0.4) exactly: the reference leaves guidance off there."""
    t = timesteps(12, 3.0)[9]
    assert t.item() == torch.tensor(0.4).item()
    assert step_scales(t, GenerationConfig(cfg_interval=(0.4, 1.0))).text == 1.0


def test_guidance_reuse_evaluates_the_branches_every_n_steps_and_is_exact_for_constant_offsets():
    from sigma_studio.model.run.sampler import denoise

    calls = []
    offsets = {"text": torch.full((4, 3), 0.3), "image": torch.full((4, 3), -0.2)}

    def velocity(x, t, branches):
        calls.append(branches)
        full = x * t + 1.0  # any function of the state; the branches sit at constant offsets from it
        return {"full": full} | {b: full + offsets[b] for b in branches if b != "full"}

    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    exact = denoise(x.clone(), velocity, GenerationConfig(steps=8))
    assert all(c == ("full", "text", "image") for c in calls)
    calls.clear()
    fast = denoise(x.clone(), velocity, GenerationConfig(steps=8, guidance_every=3))
    assert [len(c) for c in calls] == [3, 1, 1, 3, 1, 1, 3]  # 13 branch evaluations instead of 21
    torch.testing.assert_close(fast, exact)
