"""SDXL's per-crop size conditioning in the WebUI (`lib_mixture.micro_cond`): where the size pairs
lie in the loaded model's vector, their embedding by the model's own embedders, and the host's
conditioning objects rewritten per crop.

The WebUI builds the vector in ``sd_models_xl.get_learned_conditioning`` from the conds' canvas
(``original_size`` = ``target_size`` = (height, width)) and the ``sdxl_crop_top`` /
``sdxl_crop_left`` settings; sgm's ``GeneralConditioner`` concatenates each embedder's 2-D output
in embedder order, the size embedders (``ConcatTimestepEmbedderND``) after the text towers'
pooled outputs. The layout found here is checked against the host's own vector before it is
used: a model whose vector is laid out otherwise keeps the host's, with a warning.
"""

from __future__ import annotations

from typing import Any

import torch

from modules import devices, prompt_parser, shared

from lib_mixture.geometry import Box
from lib_mixture.micro_cond import SIZE_KEYS, CropVectors, VectorSlice
from lib_mixture.plan import CropSpec

PAIR_WIDTH = {key: 2 for key in SIZE_KEYS} | {"aesthetic_score": 1}  # inputs per embedder (sgm's conditioner keys)


def crop_vectors(model: Any, uncond: Any, canvas: tuple[int, int], mode: str) -> tuple[CropVectors | None, str | None]:
    """The pass's `CropVectors` for a model with SDXL's vector (else None), and a warning when the
    mode asks for it but the model's vector cannot be matched. ``uncond``: the host's uncond for
    the pass (its vector is the reference); ``canvas``: (height, width) px of the host's conds."""
    conditioner = getattr(model, "conditioner", None)
    if mode == "off" or conditioner is None:
        return None, None
    reference = _vector(uncond)
    if reference is None:
        return None, None
    layout = _layout(conditioner.embedders, reference.shape[-1])
    if layout is None:
        return None, None  # no size pairs in this model's vector: nothing to give per crop
    slices, embedders = layout

    def embed(key: str, pair: tuple[int, int]) -> torch.Tensor:
        # the host's input: (height, width) / (top, left) as devices.dtype rows (sd_models_xl)
        value = torch.tensor([list(pair)], dtype=devices.dtype, device=reference.device)
        with torch.no_grad():
            return embedders[key](value)[0]

    origin = (int(shared.opts.sdxl_crop_top), int(shared.opts.sdxl_crop_left))
    vectors = CropVectors(slices, embed, canvas, origin, regions=mode == "all")
    for s, value in vectors.parts(Box(0, 0, 1, 1)):
        if not torch.equal(reference[..., s.start:s.stop], value.to(reference.dtype)):
            return None, ("micro-conditioning is off for this model: its vector's size embedding is not where "
                          "SDXL's is, so every crop keeps the whole image's vector")
    return vectors, None


def _vector(uncond: Any) -> torch.Tensor | None:
    """The first vector of a host uncond (a list of per-image schedules)."""
    try:
        cond = uncond[0][0].cond
    except (TypeError, IndexError, AttributeError):
        return None
    vector = cond.get("vector") if isinstance(cond, dict) else None
    return vector if isinstance(vector, torch.Tensor) else None


def _layout(embedders: Any, width: int) -> tuple[list[VectorSlice], dict[str, Any]] | None:
    """The size slices of a vector ``width`` wide: the trailing size embedders, counted back from
    its end; None when the model has none."""
    slices, found, stop = [], {}, width
    for embedder in reversed(list(embedders)):
        key = getattr(embedder, "input_key", None)
        outdim = getattr(embedder, "outdim", None)
        if key not in PAIR_WIDTH or not isinstance(outdim, int):
            break
        start = stop - outdim * PAIR_WIDTH[key]
        if key in SIZE_KEYS:
            slices.append(VectorSlice(key, start, stop))
            found[key] = embedder
        stop = start
    if not slices or stop < 0:
        return None
    return slices[::-1], found


def crop_conds(pair: tuple[Any, Any], spec: CropSpec, vectors: CropVectors) -> tuple[Any, Any]:
    """A crop's ``(cond, uncond)`` (a ``MulticondLearnedConditioning`` and per-image schedules)
    with its own vector in every schedule; the same objects when the crop keeps the host's."""
    if not vectors.applies(spec):
        return pair
    key = (id(pair[0]), id(pair[1]), spec.box.x, spec.box.y)
    found = vectors.held.get(key)
    if found is not None and found[0][0] is pair[0] and found[0][1] is pair[1]:
        return found[1]
    cond, uncond = pair

    def schedule(entries: list) -> list:
        return [prompt_parser.ScheduledPromptConditioning(e.end_at_step, _with_vector(e.cond, vectors, spec))
                for e in entries]

    batch = [[prompt_parser.ComposableScheduledPromptConditioning(schedule(c.schedules), c.weight) for c in row]
             for row in cond.batch]
    out = (prompt_parser.MulticondLearnedConditioning(shape=cond.shape, batch=batch), [schedule(row) for row in uncond])
    vectors.held[key] = (pair, out)  # the pair is held, so its ids stay its own for the pass
    return out


def _with_vector(cond: Any, vectors: CropVectors, spec: CropSpec) -> Any:
    if isinstance(cond, dict) and isinstance(cond.get("vector"), torch.Tensor):
        return {**cond, "vector": vectors.crop(cond["vector"], spec)}
    return cond
