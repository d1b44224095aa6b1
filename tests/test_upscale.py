"""The upscale workflow's engine part: preset section, target size, fit geometry, resizing."""

import numpy as np
import pytest
from PIL import Image

from lib_mixture.fields import MAX_SIDE
from lib_mixture.preset import PresetError, Upscale, VAETiling, parse_preset
from lib_mixture.upscale import fit_geometry, target_size, upscale_image


def _preset(upscale=None, vae=None):
    obj = {"version": 1, "tiles": {}}
    if upscale is not None:
        obj["upscale"] = upscale
    if vae is not None:
        obj["vae"] = vae
    return parse_preset(obj)


def test_sections_round_trip_in_canonical_form():
    p = _preset({"upscaler": "R-ESRGAN 4x+", "width": 3840, "height": 2160, "fit": "pad", "guide_strength": 0.2},
                {"tiling": "on", "tile": 512})
    assert p.upscale == Upscale("R-ESRGAN 4x+", None, 3840, 2160, "pad", 0.2)
    assert p.vae == VAETiling("on", 512)
    d = p.to_dict()
    assert "scale" not in d["upscale"] and d["vae"] == {"tiling": "on", "tile": 512}
    assert parse_preset(d) == p
    # defaults: a bare section is a 2x Lanczos upscale; the default vae section is omitted
    q = _preset({})
    assert q.upscale == Upscale() and q.upscale.scale == 2.0
    assert "vae" not in q.to_dict() and "upscale" not in _preset().to_dict()
    assert parse_preset(q.to_dict()) == q


def test_the_controlnet_tile_model_is_kept_stripped_and_left_out_when_empty():
    p = _preset({"width": 3840, "height": 2160, "controlnet_tile": "  auto "})
    assert p.upscale.controlnet_tile == "auto"
    d = p.to_dict()
    assert d["upscale"]["controlnet_tile"] == "auto" and list(d["upscale"])[-1] == "controlnet_tile"
    assert parse_preset(d) == p
    q = _preset({"controlnet_tile": ""})
    assert q.upscale.controlnet_tile == "" and "controlnet_tile" not in q.to_dict()["upscale"]
    assert _preset({"controlnet_tile": "   "}).upscale == Upscale()


@pytest.mark.parametrize("section, field, words", [
    ({"scale": 0}, "upscale.scale", "(0.0, 16.0]"),
    ({"scale": -1.5}, "upscale.scale", "(0.0, 16.0]"),
    ({"scale": 17}, "upscale.scale", "(0.0, 16.0]"),
    ({"scale": "2x"}, "upscale.scale", "expected a number"),
    ({"width": 3841, "height": 2160}, "upscale.width", "nearest: 3840 or 3848"),
    ({"width": 32, "height": 2160}, "upscale.width", "[64, 16384]"),
    ({"width": 3840}, "upscale.height", "is required with upscale.width"),
    ({"scale": 2, "width": 512, "height": 512}, "upscale.scale", "not both"),
    ({"fit": "zoom"}, "upscale.fit", "'crop', 'pad', 'stretch'"),
    ({"upscaler": ""}, "upscale.upscaler", "is empty"),
    ({"guide_strength": -0.1}, "upscale.guide_strength", "[0.0, 1.0]"),
    ({"scael": 2}, "upscale.scael", "did you mean 'scale'"),
    ({"controlnet_tile": 3}, "upscale.controlnet_tile", "expected a string"),
    ({"controlnet_tile": "t" * 201}, "upscale.controlnet_tile", "200"),
])
def test_bad_upscale_fields_are_named_with_their_range(section, field, words):
    with pytest.raises(PresetError) as e:
        _preset(section)
    assert field in str(e.value) and words in str(e.value)


@pytest.mark.parametrize("vae, field, words", [
    ({"tiling": "yes"}, "vae.tiling", "'auto', 'on', 'off'"),
    ({"tile": 100}, "vae.tile", "multiple of 8"),
    ({"tile": 8}, "vae.tile", "[64, 4096]"),
])
def test_bad_vae_fields_are_named(vae, field, words):
    with pytest.raises(PresetError) as e:
        _preset(vae=vae)
    assert field in str(e.value) and words in str(e.value)


def test_target_size_from_scale_rounds_each_side_to_the_latent_grid():
    assert target_size(Upscale(scale=2.0), 512, 288) == (1024, 576)
    assert target_size(Upscale(scale=7.5), 512, 288) == (3840, 2160)
    assert target_size(Upscale(scale=1.5), 333, 201) == (496, 304)  # 499.5 -> 496, 301.5 -> 304
    assert target_size(Upscale(scale=None, width=2560, height=1440), 7, 5) == (2560, 1440)


def test_unreachable_scale_names_the_field_and_the_scales_that_work():
    with pytest.raises(PresetError) as e:
        target_size(Upscale(scale=16.0), 2000, 1000)
    msg = str(e.value)
    assert "upscale.scale" in msg and "32000x16000" in msg and f"{MAX_SIDE}" in msg and "to 8.19" in msg
    with pytest.raises(PresetError, match="upscale.scale.*at least|upscale.scale"):
        target_size(Upscale(scale=0.1), 512, 288)  # 48x32: below 64 px


@pytest.mark.parametrize("src", [(512, 288), (500, 300), (300, 500), (1000, 1000), (37, 11)])
@pytest.mark.parametrize("fit", ["crop", "pad", "stretch"])
def test_fit_geometry_covers_or_contains_the_target_and_centres(src, fit):
    W, H = 3840, 2160
    g = fit_geometry(*src, W, H, fit)
    aspect_src = src[0] / src[1]
    if fit == "stretch":
        assert (g.resize_w, g.resize_h, g.x, g.y) == (W, H, 0, 0)
        return
    # one side is exact, the aspect ratio is kept within a pixel of rounding
    assert g.resize_w == W or g.resize_h == H
    assert abs(g.resize_w / g.resize_h - aspect_src) <= aspect_src * (1 / min(g.resize_w, g.resize_h) + 1e-9)
    if fit == "crop":
        assert g.resize_w >= W and g.resize_h >= H and g.x <= 0 and g.y <= 0
    else:
        assert g.resize_w <= W and g.resize_h <= H and g.x >= 0 and g.y >= 0
    # centred: the two margins differ by at most one pixel
    assert abs((W - g.resize_w) - 2 * g.x) <= 1 and abs((H - g.resize_h) - 2 * g.y) <= 1


def _test_image(w, h):
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256], -1).astype(np.uint8)
    return Image.fromarray(a)


def test_upscale_image_sizes_and_uses_the_given_resizer():
    calls = []

    def resize(im, w, h):
        calls.append((im.size, (w, h)))
        return im.resize((w, h), Image.BICUBIC)

    out = upscale_image(_test_image(512, 288), Upscale(scale=None, width=3840, height=2160), resize)
    assert out.size == (3840, 2160) and calls == [((512, 288), (3840, 2160))]


def test_crop_keeps_the_centre_and_pad_repeats_the_edges():
    src = _test_image(400, 300)  # 4:3 into 16:9
    crop = np.asarray(upscale_image(src, Upscale(scale=None, width=1600, height=900, fit="crop")))
    plain = np.asarray(src.resize((1600, 1200), Image.LANCZOS))
    assert crop.shape == (900, 1600, 3)
    assert np.array_equal(crop, plain[150:1050])  # (1200 - 900) / 2 rows cut from the top
    pad = np.asarray(upscale_image(src, Upscale(scale=None, width=1600, height=900, fit="pad")))
    inner = np.asarray(src.resize((1200, 900), Image.LANCZOS))
    assert pad.shape == (900, 1600, 3)
    assert np.array_equal(pad[:, 200:1400], inner)
    assert np.array_equal(pad[:, :200], np.repeat(inner[:, :1], 200, axis=1))  # edge repeated, no black bars
    assert np.array_equal(pad[:, 1400:], np.repeat(inner[:, -1:], 200, axis=1))


def test_masks_follow_the_same_geometry():
    mask = Image.new("L", (400, 300), 0)
    mask.paste(255, (0, 0, 200, 300))  # left half
    out = upscale_image(mask, Upscale(scale=None, width=1600, height=900, fit="pad"))
    a = np.asarray(out)
    assert out.mode == "L" and a.shape == (900, 1600)
    assert a[:, :200].min() == 255 and a[:, 1450:].max() == 0


def test_an_upscaler_that_overshoots_is_brought_to_size():
    out = upscale_image(_test_image(100, 100), Upscale(scale=3.0), lambda im, w, h: im.resize((400, 400)))
    assert out.size == (304, 304)
