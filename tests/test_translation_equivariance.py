"""Why gaussian tiles work: local models agree with the full canvas, non-local ones need the blend.

Two properties of the mixture (paper, sections 3.1-3.2), checked on toy models whose
behaviour is known exactly:

* A translation-equivariant convolutional model of receptive radius ``R`` predicts, inside a
  crop and at least ``R`` cells from the crop's edges, exactly what it predicts there on the
  whole canvas. Only the ``R``-wide band along a crop edge that lies inside the canvas is
  wrong (it saw padding instead of the neighbouring latents). The mixture error at a pixel is
  therefore at most ``C(p) * E``: ``C(p)`` is the normalised weight that crops give the pixel
  while it is in such a band, ``E`` the largest error of a single crop. Gaussian weights make
  ``C`` tiny (they fall to about 1e-5 of their peak at a crop edge); constant weights do not.

* A model that is not purely local (here: a pointwise network plus the crop's mean, the
  kind of crop-wide statistic GroupNorm and self-attention compute) gives each crop a
  different answer for the same pixel. With constant weights and no overlap the mixture
  switches from one crop to the next within one pixel, so the disagreement appears as a
  step at the tile boundary: a seam. Gaussian weights with overlap hand over gradually, so
  no column jumps more than the image content itself does. The test measures one-column
  jumps of the row-averaged output at crop edges against the largest jump anywhere else,
  and checks that a purely pointwise model shows no seam with the same metric (so the
  metric does not invent seams).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from lib_mixture.geometry import to_latent  # noqa: E402
from lib_mixture.mixture import compile_mixture  # noqa: E402
from lib_mixture.plan import CropSpec  # noqa: E402
from lib_mixture.planner import plan_tiles  # noqa: E402

RADIUS = 3  # three 3x3 convolutions
# Convolutions of different spatial sizes may take different kernels: differences of a few
# float32 ulps of O(1) values. 1e-5 is ~100 ulps, far below any effect measured here.
ROUNDING = 1e-5


class LocalConv(nn.Module):
    """Three 3x3 convolutions: translation-equivariant, receptive radius 3."""

    def __init__(self, padding_mode: str):
        super().__init__()
        kw = dict(kernel_size=3, padding=1, padding_mode=padding_mode)
        self.c1 = nn.Conv2d(4, 16, **kw)
        self.c2 = nn.Conv2d(16, 16, **kw)
        self.c3 = nn.Conv2d(16, 4, **kw)

    def forward(self, x):
        return self.c3(torch.tanh(self.c2(torch.tanh(self.c1(x)))))


def _local_model(padding_mode: str) -> LocalConv:
    torch.manual_seed(0)
    return LocalConv(padding_mode).eval()


def _canvas(h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 4, h, w, generator=torch.Generator().manual_seed(seed))


def _tiles(width_px, height_px, tile_px, overlap_px, kind):
    plan = plan_tiles(width_px, height_px, tile_px, tile_px, overlap_px)
    return [CropSpec(to_latent(t), kind=kind) for t in plan.tiles]


def _mix(crops, x, model, batch_size=4):
    mixture = compile_mixture(crops, x.shape[-2], x.shape[-1], batch_size)
    with torch.no_grad():
        return mixture, mixture(x, torch.ones(x.shape[0]), lambda xb, sigma, specs: model(xb))


# Equivariance canvas: latent 48x64 (384x512 px), 32-cell tiles asked to overlap >= 12 cells:
# a 3x2 grid (real overlaps 16 cells, half a tile, as in the paper's grids), wider than the
# two contaminated bands of 2R = 6 cells.
H, W = 48, 64
TILE_PX, OVERLAP_PX = 256, 96


@pytest.mark.parametrize("padding_mode", ["zeros", "circular"])
def test_toy_model_is_translation_equivariant(padding_mode):
    """Precondition: away from its input's edges, the model's output only depends on the local input."""
    model = _local_model(padding_mode)
    x = _canvas(H, W)
    with torch.no_grad():
        full = model(x)
        if padding_mode == "circular":  # a circular canvas has no edge at all: exact shift equivariance
            shifted = model(torch.roll(x, shifts=(5, -9), dims=(2, 3)))
            assert torch.allclose(shifted, torch.roll(full, shifts=(5, -9), dims=(2, 3)), atol=ROUNDING, rtol=0)
        crop = model(x[:, :, 7:31, 13:37])
    r = RADIUS
    assert torch.allclose(crop[:, :, r:-r, r:-r], full[:, :, 7 + r:31 - r, 13 + r:37 - r], atol=ROUNDING, rtol=0)
    # ... and the band of width R along the crop edge really is wrong (the bound below is not vacuous).
    assert (crop[:, :, :r] - full[:, :, 7:7 + r, 13:37]).abs().max() > 1e-2


def _contamination(crops, mixture, h, w):
    """C(p): normalised weight given to p by crops for which p lies within RADIUS of an
    edge of the crop that is inside the canvas (where the crop saw padding, not latents)."""
    c = torch.zeros(h, w, dtype=torch.float64)
    for spec, weight in zip(crops, mixture.weights):
        b = spec.box
        band = torch.zeros(b.height, b.width, dtype=torch.bool)
        if b.x > 0:
            band[:, :RADIUS] = True
        if b.right < w:
            band[:, -RADIUS:] = True
        if b.y > 0:
            band[:RADIUS, :] = True
        if b.bottom < h:
            band[-RADIUS:, :] = True
        rows, cols = b.slices()
        c[rows, cols] += weight.double() * band
    return c


def _crop_error(crops, x, model, full):
    """E: the largest difference between one crop's prediction and the full-canvas one."""
    worst = 0.0
    with torch.no_grad():
        for spec in crops:
            rows, cols = spec.box.slices()
            worst = max(worst, float((model(x[:, :, rows, cols]) - full[:, :, rows, cols]).abs().max()))
    return worst


@pytest.mark.parametrize("padding_mode", ["zeros", "circular"])
def test_gaussian_tiles_match_full_canvas_prediction(padding_mode):
    """Gaussian tiles of a local model reproduce the full-canvas prediction.

    Tolerance: ``|mix - full| <= C(p) * E + 1e-5`` at every pixel (the triangle inequality on
    eq. 16), and ``1e-3 * max|full|`` overall: for this geometry ``max C`` is 3.7e-4 (a crop's
    gaussian within 2 cells of its edge is at most that fraction of the neighbours' weight
    there), so with ``E`` about the size of the signal the error must stay below 1e-3 of it. With
    constant weights the same comparison is off by tens of percent: the test can fail.

    Zero padding: the canvas border is exact too (whole canvas and border crops see the same
    zeros). Circular padding: the whole-canvas prediction wraps around, crops do not, so the
    canvas border is excluded by the receptive-field margin R.
    """
    model = _local_model(padding_mode)
    x = _canvas(H, W, seed=1)
    with torch.no_grad():
        full = model(x)
    crops = _tiles(W * 8, H * 8, TILE_PX, OVERLAP_PX, "gaussian")
    assert len(crops) == 6
    mixture, mixed = _mix(crops, x, model)
    inner = (slice(None), slice(None), slice(RADIUS, -RADIUS), slice(RADIUS, -RADIUS))
    region = inner if padding_mode == "circular" else (slice(None),) * 4

    error = (mixed - full).abs()[region]
    scale = float(full.abs().max())
    c = _contamination(crops, mixture, H, W).to(torch.float32)[None, None].expand_as(full)[region]
    e = _crop_error(crops, x, model, full)
    assert e > 0.05 * scale  # single crops are badly wrong at their edges
    assert float(c.max()) < 5e-4
    assert bool((error <= c * e + ROUNDING).all()), float((error - c * e).max())
    assert bool((error[c == 0] <= ROUNDING).all())  # untouched by any band: float rounding only
    assert float(error.max()) <= 1e-3 * scale, (float(error.max()), scale)

    # The same tiles with constant weights: the bands carry half the weight, the error is large.
    flat = [CropSpec(s.box, kind="constant") for s in crops]
    _, mixed_flat = _mix(flat, x, model)
    assert float((mixed_flat - full).abs()[region].max()) > 0.05 * scale


def test_circular_canvas_border_differs_without_margin():
    """The margin of the circular case is needed: at the canvas border tiles and canvas disagree."""
    model = _local_model("circular")
    x = _canvas(H, W, seed=1)
    with torch.no_grad():
        full = model(x)
    _, mixed = _mix(_tiles(W * 8, H * 8, TILE_PX, OVERLAP_PX, "gaussian"), x, model)
    assert float((mixed - full)[:, :, :, :RADIUS].abs().max()) > 1e-2


# --- seams -------------------------------------------------------------------------------

SEAM_H, SEAM_W = 32, 96  # one row of 32-cell tiles: 3 without overlap, 5 with 16 cells overlap


class PointwisePlusMean(nn.Module):
    """A 1x1-convolution network, plus (optionally) the per-channel mean of its input crop.

    Pointwise alone it is perfectly local (tiles reproduce the canvas exactly, whatever the
    weights); the mean term makes each crop's answer depend on the whole crop.
    """

    def __init__(self, crop_mean: bool):
        super().__init__()
        self.c1 = nn.Conv2d(4, 16, 1)
        self.c2 = nn.Conv2d(16, 4, 1)
        self.crop_mean = crop_mean

    def forward(self, x):
        out = self.c2(F.silu(self.c1(x)))
        if self.crop_mean:
            out = out + x.mean(dim=(2, 3), keepdim=True)
        return out


def _seam_canvas() -> torch.Tensor:
    """Low-frequency structure (so crop means differ from tile to tile) plus noise."""
    g = torch.Generator().manual_seed(0)
    low = F.interpolate(torch.randn(1, 4, 3, 7, generator=g), size=(SEAM_H, SEAM_W), mode="bicubic",
                        align_corners=True)
    return low + 0.5 * torch.randn(1, 4, SEAM_H, SEAM_W, generator=g)


def _column_jumps(out: torch.Tensor) -> torch.Tensor:
    """|profile[c+1] - profile[c]| of the row-averaged output, worst channel; index c = W-1 jumps.

    Averaging the 32 rows keeps a vertical seam (it is the same in every row) and shrinks
    the pixel noise of the content by ~sqrt(32).
    """
    profile = out[0].mean(dim=1)  # [C, W]
    return (profile[:, 1:] - profile[:, :-1]).abs().amax(dim=0)


def _edge_jump_indices(crops) -> list[int]:
    """Jump indices c (between columns c and c+1) where some crop starts or ends inside the canvas."""
    edges = set()
    for spec in crops:
        for v in (spec.box.x, spec.box.right):
            if 0 < v < SEAM_W:
                edges.add(v - 1)
    return sorted(edges)


def _seam_ratio(out, crops) -> float:
    """Largest jump at a crop edge over the largest jump anywhere else (> 1: edges stand out)."""
    jumps = _column_jumps(out)
    edges = _edge_jump_indices(crops)
    elsewhere = [c for c in range(SEAM_W - 1) if c not in edges]
    return float(jumps[edges].max() / jumps[elsewhere].max())


def _seam_case(crop_mean: bool, overlap_px: int, kind: str):
    torch.manual_seed(0)  # same 1x1 weights with and without the mean term
    model = PointwisePlusMean(crop_mean).eval()
    x = _seam_canvas()
    crops = _tiles(SEAM_W * 8, SEAM_H * 8, 256, overlap_px, kind)
    _, mixed = _mix(crops, x, model, batch_size=8)
    with torch.no_grad():
        full = model(x)
    return crops, mixed, full


@pytest.mark.parametrize("overlap_px,kind", [(0, "constant"), (128, "constant"), (128, "gaussian")])
def test_pointwise_model_has_no_seam_with_any_weights(overlap_px, kind):
    """Control: the metric finds no seam where none can exist (a pointwise model is tile-exact)."""
    crops, mixed, full = _seam_case(False, overlap_px, kind)
    assert torch.allclose(mixed, full, atol=ROUNDING, rtol=0)
    assert _seam_ratio(mixed, crops) < 1.0


def test_constant_weights_without_overlap_show_a_seam_for_a_non_local_model():
    crops, mixed, _ = _seam_case(True, 0, "constant")
    assert [s.box.x for s in crops] == [0, 32, 64]
    jumps = _column_jumps(mixed)
    # The step is the difference of the neighbouring crops' means (the mean term, row-averaged,
    # is all that differs between the two crops' answers at the boundary), on top of the content.
    x = _seam_canvas()
    means = [x[:, :, :, s.box.x:s.box.right].mean(dim=(0, 2, 3)) for s in crops]
    for c, (a, b) in zip((31, 63), zip(means, means[1:])):
        assert float(jumps[c]) >= 0.5 * float((a - b).abs().max())
    assert _seam_ratio(mixed, crops) > 2.0


def test_constant_weights_with_overlap_still_cut_at_crop_edges():
    """Overlap alone halves the step but leaves it where a crop starts (paper, Fig. 4 centre)."""
    crops, mixed, _ = _seam_case(True, 128, "constant")
    assert _seam_ratio(mixed, crops) > 1.5


def test_gaussian_weights_with_overlap_remove_the_seam():
    crops, mixed, _ = _seam_case(True, 128, "gaussian")
    assert [s.box.x for s in crops] == [0, 16, 32, 48, 64]
    assert _seam_ratio(mixed, crops) < 1.0
    # The hand-over is spread over the overlap: no column jumps as much as the hard cut does.
    _, hard, _ = _seam_case(True, 0, "constant")
    assert float(_column_jumps(mixed).max()) < 0.5 * float(_column_jumps(hard)[[31, 63]].min())
