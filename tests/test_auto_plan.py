"""lib_mixture.auto_plan: "auto" tile and batch sizes chosen once per job within a memory budget."""

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lib_mixture import cost
from lib_mixture.auto_plan import FALLBACK_BATCH, FALLBACK_SIDE, Budget, plan_on, resolve, wants_choice
from lib_mixture.cost import GIB
from lib_mixture.plan import build_plan
from lib_mixture.preset import PresetError, parse_preset

H200 = cost.load("sd15-fp16-sdpa-h200")
CPU = cost.load("sd15-fp32-sdpa-cpu-2core")


def preset(tiles=None, **fields):
    return parse_preset({"version": 1, "tiles": {} if tiles is None else tiles, **fields})


def budget(gib, model=H200):
    return Budget(model, gib * GIB, "test")


def test_auto_is_the_default_and_a_plan_needs_it_chosen():
    p = preset()
    assert (p.tiles.width, p.tiles.height, p.tiles.batch_size) == ("auto", "auto", "auto") and wants_choice(p)
    with pytest.raises(ValueError, match="resolve first"):
        build_plan(p, 1024, 1024)
    assert not wants_choice(preset({"width": 512, "height": 512, "batch_size": 2}))


def test_the_choice_is_the_fastest_grid_and_batch_that_fits():
    r = resolve(preset(), [(3840, 2160)], budget(8))
    every = cost.rank(H200, cost.tile_grids(3840, 2160, 64, H200.sides()))
    fits = cost.within(every, 8 * GIB)
    assert (r.choice.tile_width, r.choice.batch_size, r.choice.seconds) == (
        fits[0].tile_width, fits[0].batch_size, fits[0].seconds)
    assert r.fits == len(fits) and r.choice.peak_bytes <= 8 * GIB
    t = r.preset.tiles
    assert (t.width, t.height, t.batch_size) == (r.choice.tile_width, r.choice.tile_width, r.choice.batch_size)
    # what the infotext keeps: the tiles as chosen, the batch as asked
    assert r.shown.tiles == dataclasses.replace(t, batch_size="auto")
    plan = build_plan(r.preset, 3840, 2160)
    assert cost.estimate(plan, H200) == (r.choice.seconds, r.choice.peak_bytes)
    assert r.note.startswith(f"auto: {t.width}x{t.height} px tiles ({len(plan.tiles.tiles)} of them), batch "
                             f"{t.batch_size}: {r.choice.seconds:.3f} s/step")


@settings(max_examples=80, deadline=None)
@given(w=st.integers(8, 640).map(lambda v: v * 8), h=st.integers(8, 640).map(lambda v: v * 8),
       overlap=st.sampled_from([0, 32, 64, 128, 256]), gib=st.floats(0.5, 100.0),
       regions=st.integers(0, 3), model=st.sampled_from([H200, CPU]), auto_size=st.booleans())
def test_the_choice_never_exceeds_the_budget_when_anything_fits(w, h, overlap, gib, regions, model, auto_size):
    tiles = {"overlap": overlap} if auto_size else {"width": 512, "height": 512, "overlap": overlap}
    boxes = [{"x": 0, "y": 0, "width": w // (k + 2), "height": h // 2, "prompt": f"p{k}", "cfg_scale": 3 + k}
             for k in range(regions)]
    p = preset(tiles, regions=boxes)
    r = resolve(p, [(w, h)], budget(gib, model))
    plan = build_plan(r.preset, w, h)
    seconds, peak = cost.estimate(plan, model)
    assert (seconds, peak) == (r.choice.seconds, r.choice.peak_bytes)  # the prediction is the plan's own
    if r.fits:
        assert peak <= gib * GIB
    else:  # nothing fits: the smallest predicted peak of all, said so
        assert "OVER the budget" in r.note
        sides = model.sides() if auto_size else [512]
        grids = []
        for side in sides:
            if side > overlap:
                q = build_plan(dataclasses.replace(p, tiles=dataclasses.replace(p.tiles, width=side, height=side,
                                                                                  batch_size=1)), w, h)
                grids.append(cost.Grid(None, None, len(q.tiles.tiles), tuple(q.groups())))
        assert peak == min(c.peak_bytes for c in cost.rank(model, grids))


def test_a_bigger_budget_is_never_slower():
    times = [resolve(preset(), [(3840, 2160)], budget(b)).choice.seconds for b in (3, 4, 8, 16, 80)]
    assert times == sorted(times, reverse=True) and times[0] > times[-1]


def test_one_choice_per_job_made_on_its_largest_canvas():
    first, hires = (1024, 576), (2048, 1152)
    job = resolve(preset(), [first, hires], budget(6))
    assert job == resolve(preset(), [hires], budget(6))
    small = build_plan(job.preset, *first)  # the first pass: the same tiles, clamped, calls no larger
    assert cost.estimate(small, H200)[1] <= job.choice.peak_bytes


def test_a_fixed_grid_gets_only_its_batch_chosen():
    r = resolve(preset({"width": 640, "height": 640, "overlap": 128}), [(3840, 2160)], budget(8))
    assert (r.preset.tiles.width, r.preset.tiles.height) == (640, 640) and r.shown.tiles.batch_size == "auto"
    r = resolve(preset({"overlap": 128, "batch_size": 3}), [(3840, 2160)], budget(8))
    assert r.preset.tiles.batch_size == 3 and r.shown.tiles.width == r.preset.tiles.width != "auto"


def test_without_a_cost_model_auto_is_the_fixed_default():
    r = resolve(preset(), [(3840, 2160)], Budget(None, 0, "no cost model is measured for sdxl on cuda in fp16"))
    assert (r.preset.tiles.width, r.preset.tiles.batch_size) == (FALLBACK_SIDE, FALLBACK_BATCH) and r.choice is None
    assert r.note == ("auto: 768x768 px tiles, batch 4 (the fixed default: no cost model is measured for sdxl on "
                      "cuda in fp16)")
    assert resolve(preset(), [(512, 512)], None).preset.tiles.width == FALLBACK_SIDE


def test_an_overlap_no_automatic_tile_holds_is_named():
    with pytest.raises(PresetError, match=r"tiles.overlap: 768 px leaves no room in an automatic tile \(512 to 768"):
        resolve(preset({"overlap": 768}), [(3840, 2160)], budget(8))


def test_a_grid_over_the_servers_crop_limit_is_the_planners_message():
    from lib_mixture.limits import Limits

    with pytest.raises(PresetError, match="allowed at most 4 crops"):
        resolve(preset(), [(3840, 2160)], budget(8), Limits(max_crops=4))


def test_width_and_height_are_auto_together_and_one_side_in_px_is_square():
    with pytest.raises(PresetError, match='tiles.height: 512 beside "auto"'):
        preset({"width": "auto", "height": 512})
    assert preset({"width": 640}).tiles.height == 640
    with pytest.raises(PresetError, match=r'tiles.batch_size: expected an integer in \[1, 64\] or "auto", got "many"'):
        preset({"batch_size": "many"})


def test_the_hosts_model_by_family_device_and_dtype():
    assert cost.for_host("sd1", "cuda", "fp16") == H200
    assert cost.for_host("sd1", "cpu", "fp32") == CPU
    assert cost.for_host("sdxl", "cuda", "fp16") is None and cost.for_host("sd1", "mps", "fp16") is None
    wide = cost.for_host("sd1", "cuda", "fp32")  # --no-half: activations of 4 bytes, the same calls
    assert wide.row_cell_bytes == 2 * H200.row_cell_bytes and wide.weights_bytes == 2 * H200.weights_bytes
    assert wide.call_seconds(8, 4096) == H200.call_seconds(8, 4096) and "memory x2 for fp32" in wide.name


def test_plan_on_resolves_on_its_one_canvas():
    p = parse_preset({"version": 1, "canvas": {"width": 2048, "height": 2048}, "tiles": {}})
    assert plan_on(p, budget=budget(8)) == build_plan(resolve(p, [(2048, 2048)], budget(8)).preset)


def test_images_sampled_together_share_each_call():
    one = resolve(preset(), [(3840, 2160)], budget(8))
    two = resolve(preset(), [(3840, 2160)], budget(8), images=2)
    plan = build_plan(two.preset, 3840, 2160)
    assert two.choice.peak_bytes == H200.step(plan.groups(), plan.batch_size, rows_per_crop=4)[1] <= 8 * GIB
    assert two.choice.peak_bytes > cost.estimate(plan, H200)[1]  # twice the rows of one image's estimate
    assert two.preset.tiles.batch_size <= one.preset.tiles.batch_size and "with 2 images a batch" in two.note
