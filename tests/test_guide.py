import math

import pytest
import torch

from lib_mixture.geometry import Box
from lib_mixture.guide import GuideSpec, active_calls, apply_guides, noised_alpha_bar, noised_sigma


def test_strength_is_the_fraction_of_denoiser_calls_with_the_guide_enforced():
    assert [active_calls(8, s) for s in (0.0, 0.25, 0.5, 0.6, 1.0)] == [0, 2, 4, 5, 8]
    assert active_calls(15, 0.1) == 2  # 1.5 rounds up: a guide asked for is never dropped
    with pytest.raises(ValueError, match="strength"):
        active_calls(8, 1.5)


def test_override_writes_the_exact_noised_guide_only_when_active():
    torch.manual_seed(0)
    noise = torch.randn(2, 4, 16, 24)
    guide = GuideSpec(Box(8, 4, 12, 8), torch.randn(1, 4, 8, 12), strength=0.5)
    for sigma, on in ((10.0, True), (2.0, False)):
        x = torch.randn(2, 4, 16, 24)
        before = x.clone()
        wrote = apply_guides(x, noise, [guide], [on], sigma=sigma)
        assert wrote == on
        if on:
            assert torch.equal(x[:, :, 4:12, 8:20], guide.latent + sigma * noise[:, :, 4:12, 8:20])
            outside = torch.ones_like(x, dtype=torch.bool)
            outside[:, :, 4:12, 8:20] = False
            assert torch.equal(x[outside], before[outside])
        else:
            assert torch.equal(x, before)


def test_sigma_and_alpha_bar_forms_describe_the_same_state():
    torch.manual_seed(1)
    latent, eps = torch.randn(1, 4, 8, 8, dtype=torch.float64), torch.randn(1, 4, 8, 8, dtype=torch.float64)
    for alpha_bar in (0.9, 0.5, 0.01):
        sigma = math.sqrt((1 - alpha_bar) / alpha_bar)
        vp = noised_alpha_bar(latent, eps, alpha_bar)
        ve = noised_sigma(latent, eps, sigma)
        torch.testing.assert_close(vp / math.sqrt(alpha_bar), ve)


def test_alpha_bar_form_is_applied_with_timestep_levels():
    noise = torch.randn(1, 4, 8, 8)
    guide = GuideSpec(Box(0, 0, 8, 8), torch.zeros(1, 4, 8, 8), strength=1.0)
    x = torch.zeros(1, 4, 8, 8)
    assert apply_guides(x, noise, [guide], [True], alpha_bar=0.75)
    torch.testing.assert_close(x, math.sqrt(0.25) * noise)
    with pytest.raises(ValueError, match="exactly one"):
        apply_guides(x, noise, [guide], [True])
