"""SDXL's per-crop size conditioning (`lib_mixture.micro_cond`) and its use by the tile path, with
an SDXL-style vector: a pooled text part, then Fourier embeddings of (height, width), (top, left)
and (height, width). The WebUI's real embedders are exercised in tests/webui/test_families_inprocess.py."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lib_mixture.denoiser_hook import HostHooks, PassState, TiledInner
from lib_mixture.geometry import Box, to_latent
from lib_mixture.micro_cond import CROP_COORDS, ORIGINAL_SIZE, TARGET_SIZE, CropVectors, VectorSlice
from lib_mixture.mixture import compile_mixture
from lib_mixture.plan import MAIN, CropSpec
from lib_mixture.planner import plan_tiles

POOLED, OUT = 6, 4  # pooled text width; embedding width per number (SDXL: 1280 and 256)
SLICES = [VectorSlice(key, POOLED + 2 * OUT * i, POOLED + 2 * OUT * (i + 1))
          for i, key in enumerate((ORIGINAL_SIZE, CROP_COORDS, TARGET_SIZE))]
WIDTH = POOLED + 6 * OUT


def fourier(pair):
    """sgm's timestep embedding of each number, concatenated (the shape of ConcatTimestepEmbedderND's)."""
    half = OUT // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half) / half)
    args = torch.tensor(pair, dtype=torch.float32)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1).reshape(-1)


def host_vector(pooled, canvas, origin=(0, 0)):
    """The vector the host gives every call: the whole image's pairs."""
    return torch.cat([pooled, fourier(canvas), fourier(origin), fourier(canvas)])


def vectors(canvas, origin=(0, 0), regions=False):
    return CropVectors(SLICES, lambda key, pair: fourier(pair), canvas, origin, regions)


def test_a_crop_gets_its_offset_and_the_canvas_and_keeps_the_rest():
    pooled = torch.randn(POOLED)
    cv = vectors((1080, 1920), origin=(5, 7))
    spec = CropSpec(Box(x=3, y=2, width=8, height=8))
    assert cv.values(spec.box) == {ORIGINAL_SIZE: (1080, 1920), CROP_COORDS: (5 + 16, 7 + 24),
                                   TARGET_SIZE: (1080, 1920)}
    host = host_vector(pooled, (1080, 1920), (5, 7))
    mine = cv.crop(host, spec)
    assert torch.equal(mine, host_vector(pooled, (1080, 1920), (21, 31)))
    assert torch.equal(host, host_vector(pooled, (1080, 1920), (5, 7)))  # the host's is never written


def test_a_crop_at_the_origin_keeps_the_hosts_vector_itself():
    host = host_vector(torch.randn(POOLED), (512, 512))
    cv = vectors((512, 512))
    assert cv.crop(host, CropSpec(Box(0, 0, 64, 64))) is host
    rows = host.repeat(2, 1)
    assert cv.crop_rows(rows, [CropSpec(Box(0, 0, 8, 8))], 2) is rows


def test_region_crops_keep_the_hosts_vector_unless_all():
    host = host_vector(torch.randn(POOLED), (512, 768))
    region = CropSpec(Box(4, 4, 8, 8), cond=0)
    assert vectors((512, 768)).crop(host, region) is host
    assert torch.equal(vectors((512, 768), regions=True).crop(host, region),
                       host_vector(host[:POOLED], (512, 768), (32, 32)))
    assert not torch.equal(vectors((512, 768)).crop(host, CropSpec(Box(4, 4, 8, 8), cond=MAIN)), host)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 3), boxes=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), min_size=1, max_size=4))
def test_each_crops_rows_get_their_own_pairs_crop_major(rows, boxes):
    pooled = torch.randn(rows, POOLED)
    host = torch.stack([host_vector(p, (720, 1280)) for p in pooled])
    specs = [CropSpec(Box(x, y, 8, 8)) for x, y in boxes]
    batch = torch.cat([host] * len(specs))
    out = vectors((720, 1280)).crop_rows(batch, specs, rows)
    for j, (x, y) in enumerate(boxes):
        expected = torch.stack([host_vector(p, (720, 1280), (8 * y, 8 * x)) for p in pooled])
        assert torch.equal(out[j * rows:(j + 1) * rows], expected)
    assert torch.equal(batch, torch.cat([host] * len(specs)))


@pytest.mark.parametrize("batch_size", [1, 3])
def test_the_tile_path_gives_every_crop_its_own_vector(batch_size):
    """The model call under the sampler's wrapper sees, for each crop, the host's text part and that
    crop's size pairs; the host's own cond is untouched."""
    rows, height, width = 2, 24, 40
    crops = [CropSpec(to_latent(t)) for t in plan_tiles(width * 8, height * 8, 128, 128, 32).tiles]
    mixture = compile_mixture(crops, height, width, batch_size=batch_size)
    state = PassState(mixture, inner=True, vectors=vectors((height * 8, width * 8)))
    pooled = torch.randn(rows, POOLED)
    host = torch.stack([host_vector(p, (height * 8, width * 8)) for p in pooled])
    seen = []

    def model(x, t, cond):
        seen.append(cond["vector"].clone())
        return x * 0.5

    inner = TiledInner(model, state, HostHooks(join=None))
    cond = {"crossattn": torch.randn(rows, 77, 8), "vector": host}
    inner(torch.randn(rows, 4, height, width), torch.ones(rows), cond=cond)
    assert cond["vector"] is host and torch.equal(host, torch.stack([host_vector(p, (192, 320)) for p in pooled]))
    got = torch.cat(seen)
    assert got.shape[0] == rows * len(crops)
    offsets = {(c.box.y * 8, c.box.x * 8) for c in crops}
    found = set()
    for i in range(0, got.shape[0], rows):
        block = got[i:i + rows]
        matches = [o for o in offsets if torch.equal(block, torch.stack([host_vector(p, (192, 320), o) for p in pooled]))]
        assert len(matches) == 1
        found.add(matches[0])
    assert found == offsets and len(crops) > 3
