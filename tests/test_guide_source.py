"""Guide images by content, by hash or by allowed path (lib_mixture.guide_source): what a caller
may have the server read, and the bounds on what it decodes."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from lib_mixture.guide_source import (GuidePolicy, content_ref, infotext_guides, open_guide, read_bytes)
from lib_mixture.limits import Limits
from lib_mixture.preset import PresetError

FIELD = "regions[0].guide.image"


def png_bytes(w=16, h=12, color=(200, 30, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, format="PNG")
    return buf.getvalue()


def data_url(data: bytes, mime="image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


@pytest.fixture
def tree(tmp_path):
    """allowed/ with an image and a symlink pointing out; outside/ with a secret image."""
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    (allowed / "sub").mkdir(parents=True)
    outside.mkdir()
    (allowed / "sub" / "guide.png").write_bytes(png_bytes())
    (outside / "secret.png").write_bytes(png_bytes(color=(1, 2, 3)))
    (allowed / "link.png").symlink_to(outside / "secret.png")
    (allowed / "linkdir").symlink_to(outside, target_is_directory=True)
    return allowed, outside


def refusal_text(source, policy):
    with pytest.raises(PresetError) as e:
        read_bytes(source, policy, FIELD)
    return str(e.value)


def test_a_data_url_is_decoded_and_named_by_its_hash():
    data = png_bytes()
    guide = open_guide(data_url(data), GuidePolicy(), FIELD)
    assert guide.image.size == (16, 12) and guide.image.mode == "RGB"
    assert guide.ref == content_ref(data) and guide.ref.startswith("sha256:") and len(guide.ref) == 7 + 16


@pytest.mark.parametrize("source, message", [
    ("data:text/plain;base64,aGVsbG8=", "expected a data:image/...;base64, URL"),
    ("data:image/png,rawbytes", "expected a data:image/...;base64, URL"),
    ("data:image/png;base64,@@@not base64@@@", "not valid base64"),
    ("data:image/png;base64," + base64.b64encode(b"not an image at all").decode(), "not a readable image"),
])
def test_bad_data_urls_name_the_field(source, message):
    with pytest.raises(PresetError, match=message) as e:
        open_guide(source, GuidePolicy(), FIELD)
    assert FIELD in str(e.value)


def test_decompression_bombs_are_refused_from_the_header_before_decoding(monkeypatch):
    bomb = png_bytes(3000, 3000)  # 9 megapixels of one colour: a few KiB of PNG
    assert len(bomb) < 100_000
    decoded = []
    real_convert = Image.Image.convert
    monkeypatch.setattr(Image.Image, "convert", lambda self, *a, **k: decoded.append(1) or real_convert(self, *a, **k))
    with pytest.raises(PresetError, match=r"3000x3000 = 9000000 pixels; allowed at most 1000000"):
        open_guide(data_url(bomb), GuidePolicy(limits=Limits(max_image_pixels=1_000_000)), FIELD)
    assert decoded == []


def test_long_data_urls_are_refused_before_decoding():
    text = data_url(png_bytes())
    with pytest.raises(PresetError, match=rf"{len(text)} characters long; allowed at most 100"):
        open_guide(text, GuidePolicy(limits=Limits(max_image_chars=100)), FIELD)


def test_no_path_is_read_without_permission_and_every_refusal_reads_the_same(tree):
    allowed, outside = tree
    closed = GuidePolicy(folders=(str(allowed),), allow_paths=False)
    sources = [str(allowed / "sub" / "guide.png"), str(outside / "secret.png"), "/etc/passwd",
               "/nonexistent/file.png", "../outside/secret.png", "sub/guide.png", "missing.png"]
    messages = {refusal_text(s, closed) for s in sources}
    assert len(messages) == 1
    (message,) = messages
    assert FIELD in message and "not read" in message
    for s in sources:
        assert s not in message


def test_paths_inside_the_allowed_folders_only(tree):
    allowed, outside = tree
    policy = GuidePolicy(folders=(str(allowed),), allow_paths=True)
    assert read_bytes(str(allowed / "sub" / "guide.png"), policy, FIELD) == png_bytes()
    assert read_bytes("sub/guide.png", policy, FIELD) == png_bytes()  # relative to an allowed folder
    refused = [str(outside / "secret.png"), "../outside/secret.png", "sub/../../outside/secret.png",
               "link.png", "linkdir/secret.png", str(allowed / "link.png"), "/etc/passwd", "/etc/hostname",
               "missing.png", str(allowed / "sub"), "sub/guide.png\x00.txt"]
    messages = {refusal_text(s, policy) for s in refused}
    assert len(messages) == 1, messages


def test_no_folders_means_no_files(tree):
    allowed, _ = tree
    policy = GuidePolicy(folders=(), allow_paths=True)
    with pytest.raises(PresetError, match="not read"):
        read_bytes(str(allowed / "sub" / "guide.png"), policy, FIELD)


def test_a_hash_reference_is_found_only_among_the_allowed_files(tree):
    allowed, outside = tree
    policy = GuidePolicy(folders=(str(allowed),), allow_paths=True)
    ref = content_ref(png_bytes())
    assert read_bytes(ref, policy, FIELD) == png_bytes()
    with pytest.raises(PresetError, match="give the image again"):  # from the API: no file is read
        read_bytes(ref, GuidePolicy(folders=(str(allowed),), allow_paths=False), FIELD)
    secret = content_ref((outside / "secret.png").read_bytes())  # reachable only through symlinks
    with pytest.raises(PresetError, match="does not embed the image.*give the image again"):
        read_bytes(secret, policy, FIELD)
    with pytest.raises(PresetError, match="give the image again"):
        read_bytes(ref, GuidePolicy(), FIELD)


def test_the_local_user_reads_any_path_relative_to_the_preset(tmp_path):
    (tmp_path / "g.png").write_bytes(png_bytes())
    policy = GuidePolicy(allow_paths=True, any_path=True, relative_to=str(tmp_path))
    assert read_bytes("g.png", policy, FIELD) == png_bytes()
    with pytest.raises(PresetError, match="no such file"):
        read_bytes("nope.png", policy, FIELD)


def test_infotext_guides_never_carry_a_path_or_the_image():
    obj = {"regions": [{"guide": {"image": "/home/someone/private.png", "strength": 1}},
                       {"guide": {"image": "data:image/png;base64,AAAA", "strength": 1}},
                       {"guide": {"image": "sha256:0123456789abcdef", "strength": 1}}, {}]}
    out = infotext_guides(obj, {"/home/someone/private.png": "sha256:aaaaaaaaaaaaaaaa"})
    assert [r.get("guide", {}).get("image") for r in out["regions"]] == [
        "sha256:aaaaaaaaaaaaaaaa", "", "sha256:0123456789abcdef", None]
