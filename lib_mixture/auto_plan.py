"""``"auto"`` tile sizes and batch sizes, resolved once per job from a cost model and a memory budget.

A preset whose ``tiles.width``/``height`` or ``tiles.batch_size`` is ``"auto"`` gets, on the
job's largest canvas (the hires pass when it is mixed), the square tile (the cost model's
``tile_sides`` band, every 64 px) and the batch with the lowest predicted step time whose
predicted peak fits the budget (`lib_mixture.cost.rank`). The choice holds for every pass of
the job: a pass on a smaller canvas clamps the tiles to it, and its calls are no larger.

The tile size changes the image, the batch size does not (`lib_mixture.mixture`); so what the
infotext keeps (`Resolution.shown`) has the chosen tile size, which makes "PNG Info → Generate"
give the same image on any device, and the batch size as asked ("auto" stays "auto", chosen
again for the device it runs on). Without a cost model for the host, auto is the fixed
`FALLBACK_SIDE` and `FALLBACK_BATCH`, and the note says why. Standard library only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

from .cost import GIB, ROWS_PER_CROP, Choice, CostModel, Grid, rank, within
from .geometry import LATENT_FACTOR
from .limits import DEFAULT_LIMITS, Limits
from .plan import MixturePlan, build_plan
from .preset import Preset, PresetError

FALLBACK_SIDE = 768  # px: what "auto" tiles are where no cost model is measured (the former default)
FALLBACK_BATCH = 4  # crops per call, likewise
FREE_FRACTION = 0.9  # of the free memory for the activations: the cost model's error, and what the sampler holds besides
DEFAULT_BUDGET_GIB = 8.0  # where no device is at hand (the command line, the editor without a server's figure): a common card


@dataclass(frozen=True)
class Budget:
    """What an automatic plan is fitted to: ``model`` (None: no cost model is measured for this
    host) and ``bytes``, the memory the job may use, weights included (what
    `lib_mixture.cost.CostModel.step` calls the peak); ``source`` says where the figure comes from
    (``the weights and 90% of the 71.20 GiB free on cuda:0``, ``--budget 8 GiB``)."""

    model: CostModel | None
    bytes: float
    source: str


@dataclass(frozen=True)
class Resolution:
    """A job's preset with its ``auto`` values chosen.

    ``preset``: every tile size and batch a number (what the job plans with); ``shown``: the
    preset the infotext keeps (the chosen tile size, the batch as asked); ``choice``: the chosen
    plan's prediction (None where nothing was auto, or without a cost model); ``fits``: how many
    candidates fit the budget; ``note``: the choice and why, in one line ("" where nothing was auto)."""

    preset: Preset
    shown: Preset
    choice: Choice | None = None
    fits: int = 0
    note: str = ""


def free_memory_budget(model: CostModel, free_bytes: float, where: str) -> Budget:
    """The `Budget` of a job whose model is loaded on device ``where`` with ``free_bytes`` free:
    its weights plus `FREE_FRACTION` of what is free (what the WebUI and the GPU benchmarks plan for)."""
    return Budget(model, model.weights_bytes + FREE_FRACTION * free_bytes,
                  f"the weights and {FREE_FRACTION:.0%} of the {free_bytes / GIB:.2f} GiB free on {where}")


def wants_choice(preset: Preset) -> bool:
    """The preset has a tile grid with an ``"auto"`` tile size or batch size."""
    return preset.tiles is not None and (preset.tiles.auto_size or preset.tiles.auto_batch)


def resolve(preset: Preset, canvases: Sequence[tuple[int, int]], budget: Budget | None,
            limits: Limits = DEFAULT_LIMITS, images: int = 1) -> Resolution:
    """Choose ``preset``'s ``auto`` tile size and batch for a job on ``canvases`` (``(width, height)``
    px of each pass it mixes) within ``budget``, for ``images`` images sampled together (the
    WebUI's batch size: each crop of a call has their cond and uncond rows).

    Raises `PresetError` naming ``tiles.overlap`` when no tile side of the model's band leaves room
    for the overlap, and the planner's error when no side keeps the plan within ``limits``.
    """
    tiles = preset.tiles
    if not wants_choice(preset) or not canvases:
        return Resolution(preset, preset)
    width, height = max(canvases, key=lambda wh: (wh[0] // LATENT_FACTOR) * (wh[1] // LATENT_FACTOR))
    model = budget.model if budget is not None else None
    if model is None:
        side = FALLBACK_SIDE if tiles.auto_size else None
        batch = FALLBACK_BATCH if tiles.auto_batch else None
        chosen, shown = _fixed(preset, side, batch)
        why = budget.source if budget is not None else "no memory budget was given"
        return Resolution(chosen, shown, None, 0, f"auto: {_what(chosen)} (the fixed default: {why})")

    overlap = max(tiles.overlap.x, tiles.overlap.y)
    sides = [s for s in model.sides() if s > overlap] if tiles.auto_size else [None]
    if not sides:
        lo, hi = model.tile_sides
        raise PresetError([f"tiles.overlap: {overlap} px leaves no room in an automatic tile ({lo} to {hi} px for "
                           f"{model.name}); give an overlap below {hi} px, or tiles.width and tiles.height in px"])
    grids: dict[Grid, int | None] = {}
    error: PresetError | None = None
    seen = set()
    for side in sides:
        trial, _ = _fixed(preset, side, 1)
        try:
            plan = build_plan(trial, width, height, limits=limits)
        except PresetError as e:  # too many crops, or the overlap does not fit below this side
            error = e
            continue
        key = (plan.tiles.tile_width, plan.tiles.tile_height)
        if key in seen:  # clamped to the canvas like a smaller side: the same grid
            continue
        seen.add(key)
        grids[Grid(plan.tiles.tile_width, plan.tiles.tile_height, len(plan.tiles.tiles), tuple(plan.groups()))] = side
    if not grids:  # every grid over the server's crop limit: the largest tiles' message
        raise error
    ranked = rank(model, grids, None if tiles.auto_batch else [tiles.batch_size], rows_per_crop=ROWS_PER_CROP * images)
    fits = within(ranked, budget.bytes)
    best = fits[0] if fits else min(ranked, key=lambda c: (c.peak_bytes, c.seconds))
    side = next(s for g, s in grids.items() if (g.tile_width, g.tile_height) == (best.tile_width, best.tile_height))
    chosen, shown = _fixed(preset, side, best.batch_size if tiles.auto_batch else None)
    if fits:
        verdict = (f"the fastest of {len(fits)} grids and batches that fit" if len(fits) > 1 else
                   "the only grid and batch that fits")
    else:
        verdict = (f"OVER the budget: none of the {len(ranked)} grids and batches tried fits; this one has the smallest "
                   "predicted peak" if len(ranked) > 1 else "OVER the budget: the one grid and batch tried does not fit")
    together = f" with {images} images a batch" if images > 1 else ""
    note = (f"auto: {_what(chosen, best)}: {best.seconds:.3f} s/step and {best.peak_bytes / GIB:.2f} GiB predicted by "
            f"{model.name}{together} for {budget.bytes / GIB:.2f} GiB ({budget.source}): {verdict}")
    return Resolution(chosen, shown, best, len(fits), note)


def resolve_on(preset: Preset, width: int | None = None, height: int | None = None, budget: Budget | None = None,
               limits: Limits = DEFAULT_LIMITS) -> Resolution:
    """`resolve` on one ``width x height`` px canvas (default: the preset's); nothing is chosen
    where the size is unknown (`build_plan` then says so)."""
    if preset.canvas is not None:
        width = preset.canvas.width if width is None else width
        height = preset.canvas.height if height is None else height
    canvases = [(width, height)] if isinstance(width, int) and isinstance(height, int) else []
    return resolve(preset, canvases, budget, limits)


def plan_on(preset: Preset, width: int | None = None, height: int | None = None, budget: Budget | None = None,
            limits: Limits = DEFAULT_LIMITS) -> MixturePlan:
    """`build_plan` of ``preset`` on one ``width x height`` px canvas (default: the preset's),
    its "auto" values chosen there first (`resolve_on`; without a ``budget``, the fixed defaults)."""
    return build_plan(resolve_on(preset, width, height, budget, limits).preset, width, height, limits=limits)


def _fixed(preset: Preset, side: int | None, batch: int | None) -> tuple[Preset, Preset]:
    """``preset`` with its auto tile size set to ``side`` and its auto batch to ``batch`` (None:
    left as it is), and the same with the batch as asked (what the infotext keeps)."""
    t = preset.tiles
    sized = dataclasses.replace(t, width=side, height=side) if side is not None and t.auto_size else t
    batched = dataclasses.replace(sized, batch_size=batch) if batch is not None and t.auto_batch else sized
    return dataclasses.replace(preset, tiles=batched), dataclasses.replace(preset, tiles=sized)


def _what(preset: Preset, choice: Choice | None = None) -> str:
    """``640x640 px tiles (32 of them), batch 16``: the preset's tile size, and where the canvas
    clamps it, the tiles it makes there."""
    t = preset.tiles
    if choice is None:
        return f"{t.width}x{t.height} px tiles, batch {t.batch_size}"
    clamped = (choice.tile_width, choice.tile_height) != (t.width, t.height)
    there = f", {choice.tile_width}x{choice.tile_height} on this canvas" if clamped else ""
    return f"{t.width}x{t.height} px tiles ({choice.tiles} of them{there}), batch {t.batch_size}"
