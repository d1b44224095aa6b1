"""Guide images from what a preset names: by content (a data URL), by hash, or by file path,
under a policy that says which files the caller may have read.

A preset can arrive from someone the machine's owner does not know (the WebUI's API on a
shared server, an infotext pasted from a stranger's PNG), so a preset never decides which
file is opened. `GuidePolicy` does: file paths are read only when the policy allows paths
and the real path (symlinks followed) lies inside one of its folders; a ``sha256:`` reference
is looked up only among the files of those folders. Every refused path gets the same
message, whether or not the file exists, so a refusal tells a caller nothing about the disk.
Data URLs are bounded before decoding: the text's length, then the image's pixel count read
from its header (`Limits`), so no decompression bomb is ever decoded.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .limits import DEFAULT_LIMITS, Limits
from .preset import HASH_PREFIX, PresetError

SOURCE = "Mixture of Diffusers argument"
HASH_DIGITS = 16  # hex digits of the sha256 written into the infotext: 64 bits tell images apart
MAX_FOLDER_FILES = 10_000  # files hashed per folder when a reference is looked up


@dataclass(frozen=True)
class GuidePolicy:
    """Which guide image sources a caller may use.

    ``folders``: the folders whose files may be read (by path or by hash reference).
    ``allow_paths``: whether file paths are accepted at all (from the WebUI's API only when its
    owner turned that on). ``any_path``: the machine's own user (the command line): every
    readable path. ``refusal_hint``: the end of the refusal message, telling the user where
    the rule is set.
    """

    folders: tuple[str, ...] = ()
    allow_paths: bool = False
    any_path: bool = False
    limits: Limits = DEFAULT_LIMITS
    refusal_hint: str = "give the image as a data:image/...;base64 URL"
    relative_to: str | None = None  # folder for relative paths when ``any_path`` (a preset file's)


LOCAL_USER = GuidePolicy(allow_paths=True, any_path=True)


@dataclass
class GuideImage:
    """A decoded guide image (RGB ``PIL.Image``) and the hash reference that names it."""

    image: Any
    ref: str


def content_ref(data: bytes) -> str:
    """The ``sha256:`` reference of an image file's bytes (what the infotext holds)."""
    return HASH_PREFIX + hashlib.sha256(data).hexdigest()[:HASH_DIGITS]


def refusal(field_path: str, policy: GuidePolicy) -> PresetError:
    return PresetError([f"{field_path}: this file path is not read: guide image files are read only from the "
                        f"folders the server's owner allowed, and only where file paths are allowed; "
                        f"{policy.refusal_hint}"], SOURCE)


def read_bytes(source: str, policy: GuidePolicy, field_path: str) -> bytes:
    """The bytes of the image file ``source`` names, under ``policy``; PresetError otherwise."""
    if source.startswith("data:"):
        return _data_url_bytes(source, policy.limits, field_path)
    if source.startswith(HASH_PREFIX):
        return _by_hash(source, policy, field_path)
    path = resolve_path(source, policy, field_path)
    try:
        size = path.stat().st_size
        if size > policy.limits.max_image_chars:
            raise PresetError([f"{field_path}: the file is {size} bytes; allowed at most "
                               f"{policy.limits.max_image_chars}"], SOURCE)
        return path.read_bytes()
    except OSError:
        raise refusal(field_path, policy) from None


def open_guide(source: str, policy: GuidePolicy, field_path: str) -> GuideImage:
    """Read and decode a guide image (RGB), its size checked from the header before decoding."""
    data = read_bytes(source, policy, field_path)
    return GuideImage(decode_image(data, policy.limits, field_path), content_ref(data))


def decode_image(data: bytes, limits: Limits, field_path: str):
    from PIL import Image  # the plan preview runs without pillow; only guides need it

    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
    except Exception as e:  # noqa: BLE001 - any decoder failure is "not an image"
        raise PresetError([f"{field_path}: not a readable image ({type(e).__name__})"], SOURCE) from None
    if width * height > limits.max_image_pixels:
        raise PresetError([f"{field_path}: the image is {width}x{height} = {width * height} pixels; allowed at most "
                           f"{limits.max_image_pixels} (a limit set in the WebUI's Settings → Mixture of Diffusers)"], SOURCE)
    try:
        return image.convert("RGB")
    except Exception as e:  # noqa: BLE001 - truncated or corrupt data
        raise PresetError([f"{field_path}: not a readable image ({type(e).__name__})"], SOURCE) from None


def _data_url_bytes(source: str, limits: Limits, field_path: str) -> bytes:
    if len(source) > limits.max_image_chars:
        raise PresetError([f"{field_path}: the data URL is {len(source)} characters long; allowed at most "
                           f"{limits.max_image_chars} (a limit set in the WebUI's Settings → Mixture of Diffusers)"], SOURCE)
    head, sep, payload = source.partition(",")
    if not sep or not head.startswith("data:image/") or not head.endswith(";base64"):
        raise PresetError([f"{field_path}: expected a data:image/...;base64, URL"], SOURCE)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise PresetError([f"{field_path}: the data URL's base64 payload is not valid base64"], SOURCE) from None


def _roots(policy: GuidePolicy) -> list[Path]:
    return [Path(os.path.realpath(f)) for f in policy.folders if f and os.path.isdir(f)]


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def resolve_path(source: str, policy: GuidePolicy, field_path: str) -> Path:
    """The file a guide path names, if ``policy`` lets it be read; PresetError otherwise (for a
    caller other than the machine's user, one refusal whatever the reason)."""
    if "\x00" in source:
        raise refusal(field_path, policy)
    if policy.any_path:
        path = Path(os.path.expanduser(source))
        if not path.is_absolute() and policy.relative_to:
            path = Path(policy.relative_to) / path
        if not path.is_file():
            what = "is a folder, not an image file" if path.is_dir() else "no such file"
            raise PresetError([f"{field_path}: '{path}': {what}"
                               + (" (a relative path is read from the preset file's folder)"
                                  if not Path(os.path.expanduser(source)).is_absolute() else "")], SOURCE)
        return path
    if not policy.allow_paths:
        raise refusal(field_path, policy)
    for root in _roots(policy):
        # relative paths are relative to each allowed folder; realpath follows every symlink
        real = Path(os.path.realpath(root / source))
        if _inside(real, root) and real.is_file():
            return real
    raise refusal(field_path, policy)


_HASH_CACHE: dict[tuple[str, int, int], str] = {}  # (real path, size, mtime_ns) -> sha256 hex


def _by_hash(ref: str, policy: GuidePolicy, field_path: str) -> bytes:
    digits = ref[len(HASH_PREFIX):]
    # a reference reads a file like a path does: only where paths are allowed
    for root in (_roots(policy) if policy.allow_paths else []):
        for path in _files(root):
            try:
                st = path.stat()
                if st.st_size > policy.limits.max_image_chars:
                    continue
                key = (str(path), st.st_size, st.st_mtime_ns)
                digest = _HASH_CACHE.get(key)
                if digest is None:
                    digest = _HASH_CACHE[key] = hashlib.sha256(path.read_bytes()).hexdigest()
                if digest.startswith(digits):
                    return path.read_bytes()
            except OSError:
                continue
    raise PresetError([f"{field_path}: {ref} names a guide image by its hash; the infotext does not embed the "
                       "image, and no file with that hash is in the allowed guide folders; give the image again "
                       "(a data:image/...;base64 URL) or remove the guide"], SOURCE)


def _files(root: Path):
    """Regular files under ``root`` whose real path stays inside it, at most MAX_FOLDER_FILES."""
    count = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in sorted(names):
            path = Path(os.path.realpath(Path(dirpath) / name))
            if _inside(path, root) and path.is_file():
                count += 1
                if count > MAX_FOLDER_FILES:
                    return
                yield path


def infotext_guides(preset_dict: dict, refs: dict[str, str] | None = None) -> dict:
    """``preset_dict`` with every guide image replaced by its hash reference (``refs`` maps a
    source to its reference; a source not in it, never read, becomes an empty reference)."""
    for region in preset_dict.get("regions", []):
        guide = region.get("guide")
        if guide is not None:
            image = guide["image"]
            guide["image"] = image if image.startswith(HASH_PREFIX) else (refs or {}).get(image, "")
    return preset_dict
