import random

import pytest
import torch
from hypothesis import given, settings, strategies as st

from lib_mixture.geometry import Box, to_latent
from lib_mixture.mixture import UncoveredCanvasError, compile_mixture
from lib_mixture.plan import CropSpec
from lib_mixture.planner import plan_tiles
from lib_mixture.weights import WeightCache


def toy_predict(calls=None):
    """A deterministic stand-in for the host: a nonlinear function of the crop and its cond."""
    def predict(x, sigma, specs):
        if calls is not None:
            calls.append((tuple(x.shape), [s.cond for s in specs]))
        rows = x.shape[0] // len(specs)
        bias = torch.cat([torch.full((rows, 1, 1, 1), float(hash(str(s.cond)) % 7)) for s in specs])
        scale = torch.cat([torch.full((rows, 1, 1, 1), s.cfg_scale or 1.0) for s in specs])
        return torch.tanh(x * scale + bias) * sigma.view(-1, 1, 1, 1)
    return predict


def grid_crops(w, h, tw, th, overlap, **kw):
    plan = plan_tiles(w * 8, h * 8, tw * 8, th * 8, overlap * 8)
    return [CropSpec(to_latent(t), cond="main", **kw) for t in plan.tiles]


def test_one_crop_covering_the_canvas_is_bitwise_the_hosts_prediction():
    x = torch.randn(2, 4, 40, 56)
    sigma = torch.tensor([3.0, 3.0])
    predict = toy_predict()
    for kind in ("gaussian", "constant"):
        mix = compile_mixture([CropSpec(Box(0, 0, 56, 40), kind=kind)], 40, 56)
        assert torch.equal(mix(x, sigma, predict), predict(x, sigma, [CropSpec(Box(0, 0, 56, 40))]))


def test_prediction_tuples_are_mixed_element_by_element():
    x = torch.randn(1, 4, 24, 40)
    mix = compile_mixture(grid_crops(40, 24, 24, 24, 8), 24, 40)
    single = mix(x, torch.ones(1), toy_predict())
    pair = mix(x, torch.ones(1), lambda xb, s, specs: (toy_predict()(xb, s, specs), xb * 2))
    assert torch.equal(pair[0], single)
    torch.testing.assert_close(pair[1], x * 2)  # mixing the input itself returns it


def all_weights_sum(mix):
    total = torch.zeros(mix.height, mix.width, dtype=torch.float64)
    for spec, w in zip(mix.crops, mix.weights):
        rows, cols = spec.box.slices()
        total[rows, cols] += w.double()
    return total


@settings(max_examples=60, deadline=None)
@given(w=st.integers(8, 120), h=st.integers(8, 120), tw=st.integers(8, 64), th=st.integers(8, 64),
       overlap=st.integers(0, 40), kind=st.sampled_from(["gaussian", "constant"]),
       variance=st.floats(0.002, 0.5), extra=st.integers(0, 3), seed=st.integers(0, 2**16))
def test_normalised_weights_sum_to_one_on_every_covered_pixel(w, h, tw, th, overlap, kind, variance, extra, seed):
    overlap = min(overlap, min(tw, th) - 1)
    crops = grid_crops(w, h, tw, th, overlap, kind=kind, variance=variance)
    rng = random.Random(seed)
    for i in range(extra):  # regions of any size and weight on top of the grid
        bw, bh = rng.randint(1, w), rng.randint(1, h)
        crops.append(CropSpec(Box(rng.randint(0, w - bw), rng.randint(0, h - bh), bw, bh), cond=i,
                              weight=rng.uniform(0.1, 10), kind=kind, variance=variance))
    mix = compile_mixture(crops, h, w, cache=WeightCache())
    total = all_weights_sum(mix)
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-6)


def test_weights_of_partial_regions_sum_to_one_where_covered_and_uncovered_is_an_error():
    crops = [CropSpec(Box(0, 0, 20, 16)), CropSpec(Box(12, 0, 20, 16), cond=1)]
    mix = compile_mixture(crops, 16, 32)
    torch.testing.assert_close(all_weights_sum(mix), torch.ones(16, 32, dtype=torch.float64), rtol=0, atol=1e-6)
    with pytest.raises(UncoveredCanvasError, match=r"x=20 y=0 width=12 height=16 \(pixels x=160 y=0 width=96"):
        compile_mixture([CropSpec(Box(0, 0, 20, 16))], 16, 32)


def test_crop_order_and_batch_size_do_not_change_the_result():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 48, 72)
    sigma = torch.tensor([2.0, 2.0])
    crops = grid_crops(72, 48, 24, 24, 8)
    crops += [CropSpec(Box(10, 5, 24, 24), cond=0, cfg_scale=5.0, weight=3.0),
              CropSpec(Box(30, 20, 16, 24), cond=1, cfg_scale=9.0)]
    reference = compile_mixture(crops, 48, 72, batch_size=1)(x, sigma, toy_predict())
    for batch_size in (2, 3, 8, 64):
        shuffled = crops[:]
        random.Random(batch_size).shuffle(shuffled)
        out = compile_mixture(shuffled, 48, 72, batch_size=batch_size)(x, sigma, toy_predict())
        torch.testing.assert_close(out, reference, rtol=1e-6, atol=1e-6)


def test_batches_group_equal_size_and_scale_and_are_balanced():
    crops = grid_crops(80, 24, 16, 24, 4)  # 7 tiles of 16x24
    crops += [CropSpec(Box(0, 0, 16, 24), cond=0, cfg_scale=4.0)]  # same size, other scale
    mix = compile_mixture(crops, 24, 80, batch_size=4)
    sizes = sorted(len(b) for b in mix.batches)
    assert len(crops) == 8 and sizes == [1, 3, 4] and mix.model_calls_per_step == 3
    calls = []
    mix(torch.randn(1, 4, 24, 80), torch.ones(1), toy_predict(calls))
    assert len(calls) == 3
    assert all(len(set(conds)) == 1 for _, conds in calls)
    assert (3, 4, 24, 16) in [shape for shape, _ in calls]


def test_sigma_is_repeated_per_crop_and_on_batch_sees_every_call():
    seen, progress = [], []

    def predict(x, sigma, specs):
        seen.append(sigma.clone())
        return x
    mix = compile_mixture(grid_crops(48, 16, 16, 16, 0), 16, 48, batch_size=3)
    mix(torch.randn(2, 4, 16, 48), torch.tensor([5.0, 6.0]), predict, on_batch=lambda i, n: progress.append((i, n)))
    assert torch.equal(seen[0], torch.tensor([5.0, 6.0] * 3))
    assert progress == [(0, 1)]


def test_on_batch_can_interrupt_between_batches():
    class Stop(BaseException):
        pass

    def stop_at_second(i, n):
        if i == 1:
            raise Stop
    calls = []
    mix = compile_mixture(grid_crops(48, 16, 16, 16, 0), 16, 48, batch_size=1)
    with pytest.raises(Stop):
        mix(torch.randn(1, 4, 16, 48), torch.ones(1), toy_predict(calls), on_batch=stop_at_second)
    assert len(calls) == 1


def test_fp16_predictions_accumulate_in_float32():
    x = torch.randn(1, 4, 16, 40)
    mix = compile_mixture(grid_crops(40, 16, 16, 16, 4), 16, 40)
    out = mix(x, torch.ones(1), lambda xb, s, specs: torch.ones_like(xb, dtype=torch.float16))
    assert out.dtype == torch.float16
    assert torch.equal(out, torch.ones_like(out))


def test_weight_maps_come_from_the_cache():
    cache = WeightCache()
    compile_mixture(grid_crops(480, 270, 96, 96, 32), 270, 480, cache=cache)
    assert cache.builds == 1  # 28 tiles of one size share one map


def test_bad_crops_are_rejected():
    with pytest.raises(ValueError, match="outside"):
        compile_mixture([CropSpec(Box(0, 0, 20, 20))], 16, 16)
    with pytest.raises(ValueError, match="weight"):
        compile_mixture([CropSpec(Box(0, 0, 16, 16), weight=0)], 16, 16)
    with pytest.raises(ValueError, match="compiled for"):
        compile_mixture([CropSpec(Box(0, 0, 16, 16))], 16, 16)(torch.zeros(1, 4, 8, 8), 1.0, toy_predict())


def test_nine_crops_at_batch_eight_make_two_even_calls():
    crops = [CropSpec(Box(i * 4, 0, 8, 8)) for i in range(9)]
    mix = compile_mixture(crops, 8, 40, batch_size=8)
    assert [len(b) for b in mix.batches] == [5, 4]
