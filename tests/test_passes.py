"""lib_mixture.passes: a job's plans built once, and a pass's state from plan, batch keys and guides."""

import dataclasses

import pytest
import torch

from lib_mixture.geometry import Box, to_latent
from lib_mixture.guide import active_calls
from lib_mixture.limits import Limits
from lib_mixture.passes import (MAIN, JobPlans, PassKey, batched_crops, build_pass, guide_specs, guided_regions,
                                runs_plain)
from lib_mixture.plan import build_plan
from lib_mixture.preset import PresetError, parse_preset

TILES = {"width": 96, "height": 96, "overlap": 32, "batch_size": 2}
REGIONS = [{"x": 0, "y": 0, "width": 96, "height": 128, "prompt": "a barn"},
           {"x": 96, "y": 0, "width": 96, "height": 128, "prompt": "a lake", "guide": {"image": "sha256:" + "0" * 64,
                                                                                     "strength": 0.5}}]


def preset(**fields):
    return parse_preset({"version": 1, **fields})


def test_each_plan_is_built_once_per_latent_size(monkeypatch):
    import lib_mixture.passes as passes

    built = []
    real = passes.build_plan
    monkeypatch.setattr(passes, "build_plan", lambda *a, **kw: built.append(a[1:3]) or real(*a, **kw))
    plans = JobPlans(preset(tiles=TILES))
    first = plans.for_pixels(192, 128)
    assert plans.for_pixels(199, 135) is first  # the same 24 x 16 latent
    assert plans.for_latent(16, 24) is first
    assert plans.for_latent(32, 48) is not first
    assert built == [(192, 128), (384, 256)]
    assert first == build_plan(preset(tiles=TILES), 192, 128)


def test_a_plan_over_the_limits_stops_with_the_field_named():
    plans = JobPlans(preset(tiles=TILES), Limits(max_crops=4))
    with pytest.raises(PresetError, match="tiles: .*allowed at most 4 crops"):
        plans.for_pixels(960, 960)


def test_one_crop_covering_the_canvas_runs_plain_unless_a_region_or_canvas_guide_needs_the_mixture():
    whole = build_plan(preset(tiles={"width": 192, "height": 128, "overlap": 0, "batch_size": 4}), 192, 128)
    assert runs_plain(whole) and not runs_plain(whole, canvas_guide=True)
    assert not runs_plain(build_plan(preset(tiles=TILES), 192, 128))
    covering = build_plan(preset(regions=[{"x": 0, "y": 0, "width": 192, "height": 128}]), 192, 128)
    assert not runs_plain(covering)


def test_crops_carry_their_conditionings_batch_key():
    plan = build_plan(preset(tiles=TILES, regions=REGIONS), 192, 128)
    crops = batched_crops(plan, {MAIN: "main", 0: "short", 1: "long"})
    assert [c.batch_key for c in crops] == ["main"] * len(plan.tiles.tiles) + ["short", "long"]
    assert [dataclasses.replace(c, batch_key=None) for c in crops] == plan.crops()


def test_guides_put_the_canvas_guide_under_the_region_guides():
    plan = build_plan(preset(tiles=TILES, regions=REGIONS), 192, 128)
    assert [r.index for r in guided_regions(plan)] == [1]
    region_latent, canvas = torch.ones(1, 4, 16, 12), torch.zeros(2, 4, 16, 24)
    specs = guide_specs(plan, {1: region_latent}, canvas, 0.25)
    assert [(s.box, s.strength) for s in specs] == [(Box(0, 0, 24, 16), 0.25), (to_latent(plan.regions[1].box), 0.5)]
    assert specs[0].latent is canvas and specs[1].latent is region_latent
    assert len(guide_specs(plan, {1: region_latent})) == 1


def test_a_pass_state_from_the_plan():
    plan = build_plan(preset(tiles=TILES), 192, 128)
    state = build_pass(plan, "cpu", {}, {MAIN: ()})
    assert state.inner and not state.guides
    assert state.mixture is not None and state.noise is None

    plan = build_plan(preset(tiles=TILES, regions=REGIONS), 192, 128)
    conds = {0: ("c0", "u0"), 1: ("c1", "u1")}
    noise = torch.randn(1, 4, 16, 24)
    specs = guide_specs(plan, {1: torch.ones(1, 4, 16, 12)})
    state = build_pass(plan, "cpu", conds, {MAIN: (), 0: (), 1: ()}, guides=specs, noise=noise, total_calls=20,
                       levels="timestep", alphas_cumprod=torch.ones(3))
    assert not state.inner and state.conds == conds
    assert state.noise is noise and state.guide_calls == [active_calls(20, 0.5)] == [10]
    assert state.levels == "timestep" and state.alphas_cumprod is not None
    with pytest.raises(ValueError, match="initial noise"):
        build_pass(plan, "cpu", conds, {MAIN: (), 0: (), 1: ()}, guides=specs)


def test_pass_keys_tell_batches_and_passes_apart():
    shape = (1, 4, 16, 24)
    assert PassKey(0, False, shape) == PassKey(0, False, shape)
    assert len({PassKey(0, False, shape), PassKey(1, False, shape), PassKey(0, True, shape)}) == 3
