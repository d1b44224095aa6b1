"""The cost model (lib_mixture/cost.py): its fit, its stored models, and the choice of a tile grid
and batch size under a memory budget."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lib_mixture import cli, cost
from lib_mixture.bundled import load_bundled
from lib_mixture.auto_plan import plan_on
from lib_mixture.planner import plan_tiles

GIB = cost.GIB


@pytest.mark.parametrize("name", cost.available())
def test_every_stored_model_is_the_fit_of_its_own_measurements(name):
    model = cost.load(name)
    assert len(model.measurements) >= 3 and model.source
    again = cost.fit(model.name, model.source, model.weights_bytes, model.measurements,
                     quadratic_memory=model.row_cell2_bytes > 0)
    for key in ("call", "row_cell", "row_cell2", "base_bytes", "row_cell_bytes", "row_cell2_bytes"):
        assert getattr(again, key) == pytest.approx(getattr(model, key), rel=1e-9, abs=1e-30), key


def test_the_h200_model_predicts_its_measurements():
    model = cost.load("sd15-fp16-sdpa-h200")
    for m in model.measurements:
        assert model.call_seconds(m.rows, m.cells) == pytest.approx(m.seconds, rel=0.10), m.what
        assert model.call_bytes(m.rows, m.cells) == pytest.approx(m.extra_bytes, rel=0.25), m.what
    # about 16 KiB of activations per latent cell and row with SDPA (flash attention: no squared term)
    assert 15 * 1024 < model.row_cell_bytes < 17 * 1024 and model.row_cell2_bytes == 0


def test_fit_recovers_known_coefficients_and_never_goes_negative():
    truth = cost.CostModel("t", "synthetic", 1e9, 0.02, 3e-7, 4e-11, 5e7, 16000.0, 0.0)
    points = [cost.Measurement(r, c, truth.call_seconds(r, c), truth.call_bytes(r, c))
              for r in (2, 8, 32) for c in (1024, 4096, 16384)]
    got = cost.fit("t", "synthetic", 1e9, points)
    for key in ("call", "row_cell", "row_cell2", "base_bytes", "row_cell_bytes"):
        assert getattr(got, key) == pytest.approx(getattr(truth, key), rel=1e-6)
    # noisy times that fall with size: the fit keeps what it can and drops what would be negative
    noisy = [cost.Measurement(2, 64, 0.9, 1e3), cost.Measurement(8, 64, 0.5, 4e3), cost.Measurement(2, 4096, 0.4, 6e4),
             cost.Measurement(8, 4096, 0.45, 2.6e5)]
    fitted = cost.fit("n", "noise", 0, noisy)
    assert min(fitted.call, fitted.row_cell, fitted.row_cell2, fitted.base_bytes, fitted.row_cell_bytes) >= 0
    with pytest.raises(ValueError, match="do not determine"):
        cost.fit("x", "one size", 0, [cost.Measurement(2, 64, 1.0, 1.0)] * 3)


def test_a_step_counts_calls_per_group_and_its_largest_call():
    model = cost.load(cost.DEFAULT)
    plan = plan_on(load_bundled("upscale-4k-uhd-3840x2160"), 3840, 2160)
    assert plan.groups() == [(24, 96 * 96)] and plan.batch_size == 4
    seconds, peak = cost.estimate(plan, model)
    assert seconds == pytest.approx(6 * model.call_seconds(8, 9216))
    assert peak == pytest.approx(model.weights_bytes + model.call_bytes(8, 9216))
    assert model.step([(3, 100)], 8) == model.step([(3, 100)], 3)  # a batch beyond the crops changes nothing


@settings(max_examples=60, deadline=None)
@given(w=st.integers(64, 1024).map(lambda v: v * 8), h=st.integers(64, 1024).map(lambda v: v * 8),
       overlap=st.sampled_from([0, 64, 128, 256]), budget=st.floats(2.2, 80.0))
def test_the_choice_fits_the_budget_and_is_the_fastest_that_does(w, h, overlap, budget):
    model = cost.load(cost.DEFAULT)
    try:
        best, fits = cost.choose(model, w, h, overlap, budget * GIB)
    except ValueError as e:
        assert "no tile grid fits" in str(e)
        need = model.step([(1, 64 * 64)], 1)[1]
        assert need > budget * GIB
        return
    assert all(c.peak_bytes <= budget * GIB for c in fits)
    assert best == min(fits, key=lambda c: (c.seconds, c.peak_bytes))
    for c in (best, fits[-1]):
        tiles = plan_tiles(w, h, c.tile_width, c.tile_height, overlap).tiles
        assert c.tiles == len(tiles) and c.calls == math.ceil(c.tiles / c.batch_size)
        assert 512 <= max(c.tile_width, c.tile_height) <= 768 or c.tile_width == w or c.tile_height == h
        assert (c.seconds, c.peak_bytes) == model.step([(c.tiles, c.tile_width * c.tile_height // 64)], c.batch_size)


def test_a_bigger_budget_is_never_slower():
    model = cost.load(cost.DEFAULT)
    times = [cost.choose(model, 3840, 2160, 128, b * GIB)[0].seconds for b in (3, 4, 8, 16, 80)]
    assert times == sorted(times, reverse=True) and times[0] > times[-1]


def test_the_cli_prints_the_estimate_and_chooses_under_a_budget(capsys):
    assert cli.main(["plan", "upscale-4k-uhd-3840x2160", "--width", "3840", "--height", "2160", "--budget", "8",
                     "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "estimate      0.451 s/step, peak 3.16 GiB, within 8 GiB (sd15-fp16-sdpa-h200" in out
    assert cli.main(["plan", "upscale-4k-uhd-3840x2160", "--width", "3840", "--height", "2160", "--budget", "8",
                     "--auto", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    chosen = data["auto"]["choice"]
    assert data["batch_size"] == chosen["batch_size"] and data["tile_grid"]["tile_width"] == chosen["tile_width"]
    assert data["estimate"]["peak_bytes"] <= 8 * GIB and data["estimate"]["seconds_per_step"] < 0.451
    assert data["auto"]["fits"] > 1 and "for 8.00 GiB (--budget 8 GiB)" in data["auto"]["note"]
    # without --budget: planned for the default card, and said so
    assert cli.main(["plan", "upscale-4k-uhd-3840x2160", "--auto"]) == 0
    assert "(the default of --budget, 8 GiB)" in capsys.readouterr().out
    # nothing fits: the smallest predicted peak, flagged
    assert cli.main(["plan", "upscale-4k-uhd-3840x2160", "--budget", "1", "--auto"]) == 0
    out = capsys.readouterr().out
    assert "OVER the 1 GiB budget" in out and "OVER the budget: none of the 58 grids and batches tried fits" in out
    assert cli.main(["plan", "upscale-4k-uhd-3840x2160", "--budget", "0"]) == 2
    assert "--budget: 0 GiB" in capsys.readouterr().err
    assert cli.main(["plan", "upscale-4k-uhd-3840x2160", "--auto", "--batch-size", "4"]) == 2
    assert "--auto chooses the tile size and the batch size" in capsys.readouterr().err


def test_the_readme_shows_what_the_command_prints_today(capsys):
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert cli.main(["plan", "upscale-4k-uhd-3840x2160", "--width", "3840", "--height", "2160", "--budget", "8",
                     "--auto"]) == 0
    lines = capsys.readouterr().out.splitlines()[-2:]
    assert lines[0].startswith("  estimate") and lines[1].startswith("  auto")
    for line in lines:
        assert line in readme
