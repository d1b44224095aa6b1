"""SDXL's size conditioning per crop ("micro-conditioning").

SDXL (Podell et al. 2023, "SDXL: Improving Latent Diffusion Models for High-Resolution Image
Synthesis", sections 2.2 and 2.3) was trained with the image's ``original_size``, the
``crop_coords_top_left`` of its training crop and the ``target_size``, each pair embedded with
Fourier features and concatenated, after the pooled text embedding, into the UNet's vector
conditioning ``y``; its refiner has ``aesthetic_score`` in place of the target size. A host gives
every model call the whole image's vector. A crop of the canvas is exactly such a training crop:
`CropVectors` gives each crop the vector of "the crop at its offset of a canvas-sized image":
``crop_coords_top_left`` = the host's own crop setting plus the crop's offset in px,
``original_size`` = ``target_size`` = the canvas the host's conditioning was made for. Every other
part of the vector (the pooled text, the aesthetic score) is the host's.

The embedding itself is the host's (``embed``), so a crop at offset 0 gets the host's vector bit
for bit; such crops are left as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .geometry import LATENT_FACTOR, Box
from .plan import MAIN, CropSpec

ORIGINAL_SIZE = "original_size_as_tuple"
CROP_COORDS = "crop_coords_top_left"
TARGET_SIZE = "target_size_as_tuple"
SIZE_KEYS = (ORIGINAL_SIZE, CROP_COORDS, TARGET_SIZE)  # the pairs a crop changes, (height, width) / (top, left)


@dataclass(frozen=True)
class VectorSlice:
    """Where one embedded pair lies in the vector: ``vector[..., start:stop]``."""

    key: str
    start: int
    stop: int


@dataclass
class CropVectors:
    """The size part of each crop's vector for one pass.

    ``slices``: the vector's size pairs (`SIZE_KEYS`) and where they lie. ``embed(key, pair)``
    is the host model's own embedding of one pair (a ``[stop - start]`` tensor).
    ``canvas``: ``(height, width)`` in px that the host's conditioning was made for;
    ``origin``: the host's ``(top, left)`` crop setting in px. ``regions``: whether region
    crops get their offset too (the preset's ``micro_conditioning: "all"``) or only the
    background tiles (``"tiles"``). ``held``: the host adapter's conditionings rewritten per crop
    for this pass, by its own keys.
    """

    slices: Sequence[VectorSlice]
    embed: Callable[[str, tuple[int, int]], torch.Tensor]
    canvas: tuple[int, int]
    origin: tuple[int, int] = (0, 0)
    regions: bool = False
    held: dict = field(default_factory=dict, repr=False)
    _parts: dict = field(default_factory=dict, repr=False)

    def applies(self, spec: CropSpec) -> bool:
        """Whether this crop's vector differs from the host's (offset 0 keeps the host's)."""
        if spec.box.x == 0 and spec.box.y == 0:
            return False
        return self.regions or spec.cond == MAIN

    def values(self, box: Box) -> dict[str, tuple[int, int]]:
        """The pairs of a crop at ``box`` (latent cells), in px."""
        top, left = self.origin[0] + box.y * LATENT_FACTOR, self.origin[1] + box.x * LATENT_FACTOR
        return {ORIGINAL_SIZE: self.canvas, CROP_COORDS: (top, left), TARGET_SIZE: self.canvas}

    def parts(self, box: Box) -> list[tuple[VectorSlice, torch.Tensor]]:
        """Each slice with its embedded value for ``box``, computed once per box."""
        key = (box.x, box.y)
        if key not in self._parts:
            values = self.values(box)
            self._parts[key] = [(s, self.embed(s.key, values[s.key])) for s in self.slices]
        return self._parts[key]

    def crop(self, vector: torch.Tensor, spec: CropSpec) -> torch.Tensor:
        """``vector`` ``[..., D]`` for the crop ``spec``: a new tensor, or ``vector`` itself
        when the crop keeps the host's."""
        if not self.applies(spec):
            return vector
        out = vector.clone()
        for s, value in self.parts(spec.box):
            out[..., s.start:s.stop] = value.to(out.dtype)
        return out

    def crop_rows(self, vector: torch.Tensor, specs: Sequence[CropSpec], rows: int) -> torch.Tensor:
        """A batch's vector ``[K * rows, D]``, crop-major (K = len(specs)), each crop's rows
        given its own pairs; ``vector`` itself when no crop changes."""
        if not any(self.applies(s) for s in specs):
            return vector
        out = vector.clone()
        for j, spec in enumerate(specs):
            if self.applies(spec):
                for s, value in self.parts(spec.box):
                    out[j * rows:(j + 1) * rows, s.start:s.stop] = value.to(out.dtype)
        return out
