"""The panel's presets: the bundled ones (``presets/*.json``) and the user's own.

User presets live in ``<WebUI data path>/mixture_of_diffusers_presets`` (``--data-dir``, by
default the WebUI folder), outside the extension's folder, so updating or reinstalling the
extension keeps them. ``MOD_USER_PRESETS_DIR`` overrides the place.

A preset is named in the panel's dropdown by a label: ``bundled/<name>`` or ``user/<name>``.
Files are written with `lib_mixture.preset.save_preset` (atomic; never replaces a file unless
asked to) and read with `load_preset` (validated). Plain Python: no gradio, and the WebUI's
``modules`` only to find its data path.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from lib_mixture.bundled import bundled_presets
from lib_mixture.preset import Preset, PresetError, load_preset, loads_preset, save_preset

FOLDER_NAME = "mixture_of_diffusers_presets"
ENV_DIR = "MOD_USER_PRESETS_DIR"
BUNDLED = "bundled"
USER = "user"
MAX_NAME = 80
MAX_IMPORT_BYTES = 80 * 2**20  # guide images may be embedded as data URLs

_NAME = re.compile(r"^[\w][\w .,()+\-]*$")
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


def presets_dir() -> Path:
    """Where user presets are kept (not created here: listing must have no side effects)."""
    override = os.environ.get(ENV_DIR)
    if override:
        return Path(override)
    try:
        from modules import paths_internal

        return Path(paths_internal.data_path) / FOLDER_NAME
    except Exception:  # outside the WebUI
        return Path.home() / FOLDER_NAME


def safe_name(name: str) -> str:
    """A preset name that is also a safe file name, or ValueError saying what is wrong."""
    name = (name or "").strip()
    if name.lower().endswith(".json"):
        name = name[:-5].rstrip()
    if not name:
        raise ValueError("give the preset a name")
    if len(name) > MAX_NAME:
        raise ValueError(f"the name is {len(name)} characters long; at most {MAX_NAME}")
    if not _NAME.match(name) or name.endswith("."):
        raise ValueError("use letters, digits, spaces and . , ( ) + - _ only, starting with a letter or digit "
                         "(no slashes)")
    if name.split(".")[0].strip().lower() in _RESERVED:
        raise ValueError(f"'{name}' is a reserved file name on Windows; choose another")
    return name


def user_presets(folder: Path | None = None) -> dict[str, Path]:
    """The user's presets by name, sorted case-insensitively. A missing folder is empty."""
    folder = Path(folder) if folder is not None else presets_dir()
    if not folder.is_dir():
        return {}
    found = {p.stem: p for p in folder.glob("*.json") if p.is_file() and not p.name.startswith(".")}
    return dict(sorted(found.items(), key=lambda kv: kv[0].lower()))


def choices(folder: Path | None = None) -> list[str]:
    """Dropdown labels: the bundled presets, then the user's."""
    bundled = [label_for(BUNDLED, name) for name in bundled_presets()]
    try:
        return bundled + [label_for(USER, name) for name in user_presets(folder)]
    except OSError:  # an unreadable presets folder: the bundled ones still work
        return bundled


def resolve(label: str, folder: Path | None = None) -> tuple[str, str, Path]:
    """``(kind, name, path)`` of a dropdown label; KeyError when there is no such preset."""
    kind, _, name = (label or "").partition("/")
    if kind == BUNDLED and name in bundled_presets():
        return kind, name, bundled_presets()[name]
    if kind == USER:
        found = user_presets(folder).get(name)
        if found is not None:
            return kind, name, found
    raise KeyError(f"no preset '{label}'")


def load(label: str, folder: Path | None = None) -> Preset:
    """The preset behind a label, validated (PresetError names the bad field)."""
    _, _, path = resolve(label, folder)
    return load_preset(path)


def user_path(name: str, folder: Path | None = None) -> Path:
    folder = Path(folder) if folder is not None else presets_dir()
    return folder / f"{safe_name(name)}.json"


def exists(name: str, folder: Path | None = None) -> bool:
    return user_path(name, folder).exists()


def save(text: str, name: str, folder: Path | None = None, overwrite: bool = False) -> Path:
    """Validate the panel's JSON ``text`` and save it as the user preset ``name``.

    The preset's own ``name`` becomes ``name``. Raises PresetError (bad preset), ValueError (bad
    name) or FileExistsError (the name is taken and ``overwrite`` is false).
    """
    clean = safe_name(name)
    preset = dataclasses.replace(loads_preset(text, "configuration"), name=clean)
    return save_preset(preset, user_path(clean, folder), overwrite=overwrite)


def delete(label: str, folder: Path | None = None) -> Path:
    """Delete a user preset; bundled presets cannot be deleted (ValueError)."""
    kind, name, path = resolve(label, folder)
    if kind != USER:
        raise ValueError(f"'{label}' is a bundled preset; only your own presets can be deleted")
    path.unlink()
    return path


def import_file(path: str | os.PathLike) -> Preset:
    """A preset from an uploaded JSON file, validated."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise PresetError([f"cannot read {path.name}: {e.strerror or e}"], "imported file") from None
    if size > MAX_IMPORT_BYTES:
        raise PresetError([f"the file is {size} bytes; at most {MAX_IMPORT_BYTES}"], "imported file")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PresetError(["the file is not UTF-8 text"], "imported file") from None
    return loads_preset(text, "imported file")


def label_for(kind: str, name: str) -> str:
    return f"{kind}/{name}"
