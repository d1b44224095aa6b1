import math

import pytest
import torch

from lib_mixture.geometry import Box
from lib_mixture.guide import GuideSpec, apply_guides, guide_cutoff, is_active, noised_alpha_bar, noised_sigma


def test_cutoff_enforces_the_guide_on_the_first_strength_fraction_of_steps():
    sigmas = [14.6, 8.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.1, 0.0]  # 8 steps + the final 0
    assert guide_cutoff(sigmas, 1.0) == 0.1
    assert guide_cutoff(sigmas, 0.5) == 2.0
    assert guide_cutoff(sigmas, 0.25) == 8.0
    assert guide_cutoff(sigmas, 0.0) is None
    active = [s for s in sigmas[:-1] if is_active(s, guide_cutoff(sigmas, 0.5))]
    assert active == [14.6, 8.0, 4.0, 2.0]
    with pytest.raises(ValueError, match="strength"):
        guide_cutoff(sigmas, 1.5)


def test_override_writes_the_exact_noised_guide_while_active_and_stops_at_the_cutoff():
    torch.manual_seed(0)
    noise = torch.randn(2, 4, 16, 24)
    guide = GuideSpec(Box(8, 4, 12, 8), torch.randn(1, 4, 8, 12), strength=0.5)
    sigmas = [10.0, 5.0, 2.0, 1.0, 0.0]
    cutoff = guide_cutoff(sigmas, guide.strength)
    for sigma in sigmas[:-1]:
        x = torch.randn(2, 4, 16, 24)
        before = x.clone()
        wrote = apply_guides(x, noise, [guide], [cutoff], sigma, sigma=sigma)
        inside = x[:, :, 4:12, 8:20]
        if sigma >= 5.0:
            assert wrote
            assert torch.equal(inside, guide.latent + sigma * noise[:, :, 4:12, 8:20])
            outside = torch.ones_like(x, dtype=torch.bool)
            outside[:, :, 4:12, 8:20] = False
            assert torch.equal(x[outside], before[outside])
        else:
            assert not wrote and torch.equal(x, before)


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
    cutoff = guide_cutoff([999, 749, 499, 249], 1.0)
    assert apply_guides(x, noise, [guide], [cutoff], 249, alpha_bar=0.75)
    torch.testing.assert_close(x, math.sqrt(0.25) * noise)
    with pytest.raises(ValueError, match="exactly one"):
        apply_guides(x, noise, [guide], [cutoff], 249)
