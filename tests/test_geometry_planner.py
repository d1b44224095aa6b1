import math

import pytest
from hypothesis import given, settings, strategies as st

from lib_mixture.geometry import Box, snap_box, to_latent
from lib_mixture.planner import model_calls_per_step, plan_axis, plan_tiles


def test_snap_moves_each_edge_to_the_nearest_grid_line():
    assert snap_box(3, 13, 100, 50, 512, 512) == Box(0, 16, 104, 48)
    # A box that would vanish keeps one cell; a box past the canvas is clamped.
    assert snap_box(500, 0, 2, 2, 512, 512) == Box(504, 0, 8, 8)
    assert snap_box(509, 0, 2, 2, 512, 512) == Box(504, 0, 8, 8)
    assert snap_box(400, 0, 200, 8, 512, 512) == Box(400, 0, 112, 8)


def test_to_latent_divides_by_the_factor_and_rejects_off_grid_boxes():
    assert to_latent(Box(64, 8, 640, 480)) == Box(8, 1, 80, 60)
    with pytest.raises(ValueError, match="latent grid"):
        to_latent(Box(4, 0, 64, 64))


def test_paper_4k_grid_is_11_by_8_with_the_stated_overlaps():
    plan = plan_tiles(3840, 2160, 640, 480, (320, 240))
    assert (len(plan.columns.starts), len(plan.rows.starts)) == (11, 8)
    assert set(plan.overlaps_x) == {320} and set(plan.overlaps_y) == {240}
    assert plan.tiles[-1].right == 3840 and plan.tiles[-1].bottom == 2160


def test_tile_larger_than_canvas_is_clamped_to_one_tile():
    plan = plan_tiles(512, 384, 768, 768, 64)
    assert plan.tiles == (Box(0, 0, 512, 384),)
    assert plan.redundancy == 1.0


def test_overlap_not_below_tile_is_an_error():
    with pytest.raises(ValueError, match="overlap"):
        plan_tiles(2048, 2048, 512, 512, 512)


def test_model_calls_per_step_counts_batches_per_group():
    assert model_calls_per_step([9], 4) == 3
    assert model_calls_per_step([9, 2], 8) == 3
    with pytest.raises(ValueError):
        model_calls_per_step([1], 0)


@settings(max_examples=300, deadline=None)
@given(length=st.integers(1, 600), tile=st.integers(1, 200), overlap_frac=st.floats(0, 0.95))
def test_axis_plan_is_minimal_flush_even_and_never_below_the_overlap(length, tile, overlap_frac):
    overlap = min(int(tile * overlap_frac), tile - 1)
    plan = plan_axis(length, tile, overlap)
    starts = plan.starts
    assert starts[0] == 0 and starts[-1] + plan.size == length  # edges flush
    if tile >= length:
        assert starts == (0,) and plan.size == length
        return
    steps = [b - a for a, b in zip(starts, starts[1:])]
    assert all(s > 0 for s in steps)
    assert max(steps) - min(steps) <= 1  # spread evenly
    assert all(o >= overlap for o in plan.overlaps)
    # Fewest tiles: one tile less cannot reach the requested overlap.
    n = len(starts)
    if n > 2:
        assert math.ceil((length - tile) / (n - 2)) > tile - overlap


@settings(max_examples=100, deadline=None)
@given(w=st.integers(1, 300), h=st.integers(1, 300), tw=st.integers(8, 128), th=st.integers(8, 128),
       o=st.integers(0, 60))
def test_grid_covers_every_pixel(w, h, tw, th, o):
    o = min(o, min(tw, th) - 1)
    plan = plan_tiles(w * 8, h * 8, tw * 8, th * 8, o * 8)
    covered = [[False] * w for _ in range(h)]
    for t in plan.tiles:
        lt = to_latent(t)
        for y in range(lt.y, lt.bottom):
            for x in range(lt.x, lt.right):
                covered[y][x] = True
    assert all(all(row) for row in covered)
    assert plan.redundancy >= 1.0


@settings(max_examples=200, deadline=None)
@given(w=st.integers(8, 4000), h=st.integers(8, 4000), tile=st.integers(64, 1024), overlap=st.integers(0, 200),
       rx=st.floats(0, 0.9), rw=st.floats(0.05, 1.0))
def test_any_canvas_size_is_planned_on_the_latent_the_model_samples(w, h, tile, overlap, rx, rw):
    """Every size the WebUI accepts (off the 8 px grid too): the plan's latent is floor(px / 8),
    the tiles cover it exactly and stay inside it, the count matches `tile_count`, and a region
    drawn on the requested size lands inside the sampled canvas."""
    from lib_mixture.auto_plan import plan_on
    from lib_mixture.planner import tile_count
    from lib_mixture.preset import PresetError, parse_preset

    overlap = min(overlap, tile // 2)  # dense grids past the crops limit are refused (tested elsewhere)
    x, width = round(rx * w, 1), max(8.0, round(rw * w * (1 - rx), 1))
    preset = parse_preset({"version": 1, "tiles": {"width": tile, "height": tile, "overlap": overlap},
                           "regions": [{"x": x, "y": 0, "width": min(width, w - x), "height": h}]}
                          if x + 8 <= w else {"version": 1, "tiles": {"width": tile, "height": tile, "overlap": overlap}})
    try:
        plan = plan_on(preset, w, h)
    except PresetError as e:  # only a grid past the crops-per-step limit is refused
        assert "allowed at most 2048 crops per step" in str(e)
        return
    lh, lw = h // 8, w // 8
    assert plan.latent_size == (lh, lw) and (plan.canvas_width, plan.canvas_height) == (lw * 8, lh * 8)
    covered = [[0] * lw for _ in range(lh)] if lw * lh <= 40_000 else None
    for c in plan.crops():
        assert 0 <= c.box.x and c.box.right <= lw and 0 <= c.box.y and c.box.bottom <= lh
        if covered is not None and c.cond == "main":
            for yy in range(c.box.y, c.box.bottom):
                for xx in range(c.box.x, c.box.right):
                    covered[yy][xx] = 1
    if covered is not None:
        assert all(all(row) for row in covered)
    assert len(plan.tiles.tiles) == tile_count(plan.canvas_width, plan.canvas_height, plan.tiles.tile_width,
                                               plan.tiles.tile_height, overlap)
