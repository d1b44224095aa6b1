"""upscale.controlnet_tile's model lookup and unit slot, against a stand-in for sd-webui-controlnet's
model list and its external API (the real ones: tests/webui/test_controlnet_inprocess.py)."""

from __future__ import annotations

import enum
import sys
import types

import pytest

from lib_mixture.preset import PresetError
from lib_mixture_webui import controlnet_tile

MODELS = {"None": None, "control_v11p_sd15_canny [d14c016b]": "/m/control_v11p_sd15_canny.pth",
          "control_v11f1e_sd15_tile [a371b31b]": "/m/control_v11f1e_sd15_tile.pth",
          "ttplanet_tile_realistic [1c6b3ec1]": "/m/TTPLANET_tile_realistic.safetensors",
          "TTPLANET_Tile_realistic_v2_fp16_sdxl [5156ac37]": "/m/TTPLANET_Tile_realistic_v2_fp16_sdxl.safetensors"}


class Version(enum.Enum):
    """ControlNet's StableDiffusionVersion, its rule by file name (scripts/enums.py)."""
    UNKNOWN, SD1x, SD2x, SDXL = 0, 1, 2, 3

    @staticmethod
    def detect_from_model_name(name):
        name = name.lower()
        return (Version.SD1x if any(f"sd{v}" in name for v in ("14", "15", "16")) else
                Version.SDXL if "xl" in name else Version.UNKNOWN)

    def is_compatible_with(self, other):
        return self is other


class Unit:
    def __init__(self, enabled=False, model="None", module="none", **fields):
        self.enabled, self.model, self.module, self.fields = enabled, model, module, fields


@pytest.fixture
def controlnet(monkeypatch):
    state = types.SimpleNamespace(cn_models=dict(MODELS), cn_models_names={
        path.rsplit("/", 1)[-1].rsplit(".", 1)[0].lower(): key for key, path in MODELS.items() if path})
    written = []
    code = types.SimpleNamespace(
        ControlNetUnit=Unit,
        find_cn_script=lambda runner: runner,
        get_all_units_in_processing=lambda p: list(p.units),
        update_cn_script_in_processing=lambda p, units: written.append(list(units)))
    state.loaded = Version.SD1x
    state.get_sd_version = lambda: state.loaded
    monkeypatch.setitem(sys.modules, "scripts.global_state", state)
    monkeypatch.setitem(sys.modules, "scripts.enums", types.SimpleNamespace(StableDiffusionVersion=Version))
    monkeypatch.setitem(sys.modules, "internal_controlnet.external_code", code)
    return written


def test_auto_takes_the_first_tile_model_and_names_match_as_controlnet_matches_them(controlnet):
    assert controlnet_tile.tile_models() == ["control_v11f1e_sd15_tile [a371b31b]", "ttplanet_tile_realistic [1c6b3ec1]",
                                             "TTPLANET_Tile_realistic_v2_fp16_sdxl [5156ac37]"]  # any case
    assert controlnet_tile.resolve(" AUTO ") == "control_v11f1e_sd15_tile [a371b31b]"
    assert controlnet_tile.resolve("control_v11f1e_sd15_tile [a371b31b]") == "control_v11f1e_sd15_tile [a371b31b]"
    assert controlnet_tile.resolve("TTPLANET_tile_realistic") == "ttplanet_tile_realistic [1c6b3ec1]"
    assert controlnet_tile.resolve("canny") == "control_v11p_sd15_canny [d14c016b]"  # the shortest name containing it
    # a name with another machine's hash (a pasted infotext): the same file name
    assert controlnet_tile.resolve("control_v11f1e_sd15_tile [deadbeef]") == "control_v11f1e_sd15_tile [a371b31b]"
    with pytest.raises(PresetError, match=r"upscale\.controlnet_tile: no ControlNet model named 'depth'; installed: "
                                          r"control_v11p_sd15_canny \[d14c016b\], "):
        controlnet_tile.resolve("depth")


def test_auto_without_a_tile_model_and_no_controlnet_name_the_field(controlnet, monkeypatch):
    sys.modules["scripts.global_state"].cn_models = {"None": None}
    with pytest.raises(PresetError, match=r"upscale\.controlnet_tile: 'auto' found no ControlNet model with 'tile'"):
        controlnet_tile.resolve("auto")
    monkeypatch.delitem(sys.modules, "internal_controlnet.external_code")
    with pytest.raises(PresetError, match=r"upscale\.controlnet_tile: sd-webui-controlnet is not installed"):
        controlnet_tile.add_unit(types.SimpleNamespace(scripts=object(), units=[]), "auto")


def test_the_unit_takes_the_first_free_slot_and_none_is_added_beside_one_of_the_same_model(controlnet):
    mine = Unit(enabled=True, model="control_v11p_sd15_canny", module="canny")
    p = types.SimpleNamespace(scripts=object(), units=[mine, Unit(), Unit()])
    line = controlnet_tile.add_unit(p, "auto")
    assert line.startswith("ControlNet unit 2: control_v11f1e_sd15_tile [a371b31b] (tile_resample, weight 1)")
    units = controlnet[-1]
    assert len(units) == 3 and units[0] is mine and not units[2].enabled
    tile = units[1]
    assert (tile.enabled, tile.model, tile.module) == (True, "control_v11f1e_sd15_tile [a371b31b]", "tile_resample")
    assert tile.fields["image"] is None and tile.fields["weight"] == 1.0
    full = types.SimpleNamespace(scripts=object(), units=[mine])
    controlnet_tile.add_unit(full, "auto")
    assert len(controlnet[-1]) == 2  # no free slot: appended
    pasted = types.SimpleNamespace(scripts=object(), units=[Unit(enabled=True, model="control_v11f1e_sd15_tile")])
    assert "already uses control_v11f1e_sd15_tile [a371b31b]" in controlnet_tile.add_unit(pasted, "auto")
    assert len(controlnet) == 2  # nothing written


def test_auto_takes_a_tile_model_of_the_loaded_family_and_a_named_one_of_another_family_is_refused(controlnet):
    state = sys.modules["scripts.global_state"]
    assert controlnet_tile.resolve("auto") == "control_v11f1e_sd15_tile [a371b31b]"  # SD 1.x loaded: named sd15
    state.loaded = Version.SDXL
    assert controlnet_tile.resolve("auto") == "TTPLANET_Tile_realistic_v2_fp16_sdxl [5156ac37]"  # named for SDXL
    with pytest.raises(PresetError, match=r"upscale\.controlnet_tile: control_v11f1e_sd15_tile \[a371b31b\] is a "
                                          r"ControlNet model for another model family than the loaded checkpoint \(SDXL\)"):
        controlnet_tile.resolve("control_v11f1e_sd15_tile")
    state.loaded = Version.SD2x  # only models whose names do not say are left
    assert controlnet_tile.resolve("auto") == "ttplanet_tile_realistic [1c6b3ec1]"
    state.cn_models = {k: v for k, v in MODELS.items() if "ttplanet_tile" not in k}
    with pytest.raises(PresetError, match=r"'auto' found only tile models for another model family than the loaded "
                                          r"checkpoint \(SD2x\)"):
        controlnet_tile.resolve("auto")


def test_a_named_model_without_tile_in_its_name_is_used_with_a_doubt_in_the_console(controlnet):
    p = types.SimpleNamespace(scripts=object(), units=[Unit()])
    line = controlnet_tile.add_unit(p, "canny")
    assert "control_v11p_sd15_canny [d14c016b]" in line and "its name has no 'tile': is it a tile model?" in line
