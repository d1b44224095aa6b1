"""The panel's preset folder: listing, saving (never overwriting unasked), deleting, importing."""

from __future__ import annotations

import json
import sys
import types

import pytest

from lib_mixture.bundled import bundled_presets
from lib_mixture.preset import PresetError, load_preset
from lib_mixture_webui import user_presets as up

GRID = json.dumps({"version": 1, "tiles": {"width": 512, "height": 512, "overlap": 64, "batch_size": 2}})
REGIONS = json.dumps({"version": 1, "canvas": {"width": 512, "height": 512},
                      "regions": [{"x": 0, "y": 0, "width": 512, "height": 512, "prompt": "a castle"}]})


def test_choices_list_bundled_then_user_presets(tmp_path):
    assert up.choices(tmp_path / "missing") == [f"bundled/{n}" for n in bundled_presets()]
    up.save(GRID, "zeta", tmp_path)
    up.save(GRID, "Alpha", tmp_path)
    (tmp_path / ".hidden.json").write_text(GRID)
    (tmp_path / "notes.txt").write_text("x")
    labels = up.choices(tmp_path)
    assert labels[-2:] == ["user/Alpha", "user/zeta"]
    assert "bundled/paper-fig4-composition" in labels
    assert not (tmp_path / "missing").exists(), "listing creates nothing"


def test_an_unreadable_folder_still_lists_the_bundled_presets(tmp_path, monkeypatch):
    def unreadable(folder=None):
        raise PermissionError("denied")

    monkeypatch.setattr(up, "user_presets", unreadable)
    assert up.choices(tmp_path) == [f"bundled/{n}" for n in bundled_presets()]


def test_save_validates_names_the_preset_and_round_trips(tmp_path):
    path = up.save(REGIONS, "my layout (v2)", tmp_path)
    assert path == tmp_path / "my layout (v2).json"
    preset = up.load("user/my layout (v2)", tmp_path)
    assert preset.name == "my layout (v2)"
    assert preset.regions[0].prompt == "a castle"
    assert load_preset(path) == preset


def test_save_never_overwrites_unless_asked(tmp_path):
    up.save(GRID, "grid", tmp_path)
    with pytest.raises(FileExistsError):
        up.save(REGIONS, "grid", tmp_path)
    assert up.load("user/grid", tmp_path).tiles is not None, "the first file is untouched"
    up.save(REGIONS, "grid", tmp_path, overwrite=True)
    assert up.load("user/grid", tmp_path).tiles is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.json"], "no temporary files left"


@pytest.mark.parametrize("bad", ["", "   ", "../evil", "a/b", "a\\b", ".hidden", "x" * 81, "name.", "CON", "lpt1.json",
                                 "tab\there"])
def test_bad_names_are_refused(tmp_path, bad):
    with pytest.raises(ValueError):
        up.save(GRID, bad, tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_name_may_end_in_json(tmp_path):
    assert up.save(GRID, "grid.json", tmp_path).name == "grid.json"
    assert up.exists("grid", tmp_path)


def test_an_invalid_preset_is_not_saved(tmp_path):
    with pytest.raises(PresetError) as e:
        up.save(json.dumps({"version": 1, "tiles": {"width": 5}}), "bad", tmp_path)
    assert "tiles.width" in str(e.value)
    assert not any(tmp_path.iterdir())


def test_delete_user_presets_only(tmp_path):
    up.save(GRID, "mine", tmp_path)
    assert up.delete("user/mine", tmp_path) == tmp_path / "mine.json"
    assert up.user_presets(tmp_path) == {}
    with pytest.raises(ValueError):
        up.delete("bundled/upscale-2x", tmp_path)
    assert (bundled_presets()["upscale-2x"]).exists()
    with pytest.raises(KeyError):
        up.delete("user/mine", tmp_path)


def test_resolve_and_load_bundled(tmp_path):
    kind, name, path = up.resolve("bundled/paper-fig8-4k-grid", tmp_path)
    assert (kind, name) == ("bundled", "paper-fig8-4k-grid") and path.is_file()
    assert up.load("bundled/paper-fig8-4k-grid", tmp_path).tiles.width == 640
    for label in ("nothing", "user/none", "bundled/none", "other/upscale-2x", None):
        with pytest.raises(KeyError):
            up.resolve(label, tmp_path)


def test_import_file(tmp_path):
    good = tmp_path / "in.json"
    good.write_bytes(b"\xef\xbb\xbf" + REGIONS.encode())  # a BOM from a Windows editor
    assert up.import_file(good).regions[0].prompt == "a castle"
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1, "regions": [{"x": 0, "y": 0, "width": 0, "height": 8}]}')
    with pytest.raises(PresetError, match=r"regions\[0\]\.width"):
        up.import_file(bad)
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(PresetError, match="UTF-8"):
        up.import_file(binary)
    with pytest.raises(PresetError, match="cannot read"):
        up.import_file(tmp_path / "absent.json")


def test_presets_dir_is_under_the_webui_data_path_not_the_extension(monkeypatch, tmp_path):
    monkeypatch.delenv(up.ENV_DIR, raising=False)
    fake = types.ModuleType("modules.paths_internal")
    fake.data_path = str(tmp_path / "webui-data")
    pkg = types.ModuleType("modules")
    pkg.paths_internal = fake
    monkeypatch.setitem(sys.modules, "modules", pkg)
    monkeypatch.setitem(sys.modules, "modules.paths_internal", fake)
    assert up.presets_dir() == tmp_path / "webui-data" / "mixture_of_diffusers_presets"
    monkeypatch.setenv(up.ENV_DIR, str(tmp_path / "elsewhere"))
    assert up.presets_dir() == tmp_path / "elsewhere"
