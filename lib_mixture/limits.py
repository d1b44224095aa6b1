"""Resource limits: what one preset may ask of the machine, checked before any work.

A shared WebUI (``--listen``) serves callers its owner does not know; without limits one
request could ask for millions of tiles, a decompression bomb as a guide image, or a JSON
nested deep enough to exhaust the parser. Every limit is checked while the preset is read
or planned, and a breach is a `PresetError` naming the field, the value and the limit.

The defaults are generous for real use (a 16384 px canvas in 512 px tiles is 1369 crops);
the WebUI adapter reads the server owner's settings into a `Limits`. The command line, run
by the machine's own user, uses the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 2**20


@dataclass(frozen=True)
class Limits:
    """Upper bounds for one preset and the plan made from it.

    ``max_regions``: regions in a preset. ``max_crops``: crops per sampling step (tiles plus
    regions), each one model input of a tile's size. ``max_text``: characters of one prompt.
    ``max_json_chars``: length of a preset's JSON text (data URL guide images included).
    ``max_depth``: nesting of JSON objects and lists (a valid preset needs 4).
    ``max_nodes``: JSON values in one preset (objects, lists, strings, numbers).
    ``max_image_chars``: length of one guide image's data URL. ``max_image_pixels``: width x
    height of a decoded guide image, read from its header before any pixel is decoded.
    """

    max_regions: int = 256
    max_crops: int = 2048
    max_text: int = 10_000
    max_json_chars: int = 96 * MIB
    max_depth: int = 16
    max_nodes: int = 100_000
    max_image_chars: int = 32 * MIB
    max_image_pixels: int = 64_000_000


DEFAULT_LIMITS = Limits()


def json_shape_problem(obj, limits: Limits = DEFAULT_LIMITS) -> str | None:
    """Why a decoded JSON value is too deep or too large to validate, or None.

    Iterative, so a value nested far beyond Python's recursion limit is measured safely.
    """
    stack = [(obj, 1)]
    nodes = 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > limits.max_nodes:
            return f"has more than {limits.max_nodes} JSON values; allowed at most {limits.max_nodes}"
        if depth > limits.max_depth:
            return f"is nested more than {limits.max_depth} levels deep; allowed at most {limits.max_depth}"
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend((v, depth + 1) for v in value)
    return None
