"""What a plan costs on a device: time per sampling step and peak memory, from a cost model
fitted to measured model calls, and the plan with the lowest predicted step time that fits a
memory budget.

A model call on ``rows`` latent crops of ``cells`` = height x width latent cells each (a crop
batch with its cond and uncond rows) is modelled as

    seconds(rows, cells) = call + row_cell * rows * cells + row_cell2 * rows * cells**2
    bytes(rows, cells)   = base + row_cell_bytes * rows * cells + row_cell2_bytes * rows * cells**2

(the squared terms are self-attention over the crop's tokens: its time always, its memory only
without a memory-efficient attention kernel). A step runs ceil(n / batch) calls per group of n
equal crops (`lib_mixture.planner.model_calls_per_step`), and its peak is the model weights plus
the largest call's activations. The coefficients are least-squares fits to measured calls,
weighted by 1 / value so that small and large calls count alike; every model file
(``lib_mixture/costs/*.json``) keeps the measurements it was fitted to, and `fit` on them gives
its coefficients again (``tests/test_cost.py``). Standard library only, like the planner.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence

from .planner import plan_tiles

FOLDER = Path(__file__).resolve().parent / "costs"
DEFAULT = "sd15-fp16-sdpa-h200"  # the one measured so far; the editor's estimate uses it
GIB = 2**30
ROWS_PER_CROP = 2  # cond and uncond of one image: the WebUI batches both
SIDE_STEP = 64  # px between the square tile sides an automatic plan tries
MAX_BATCH = 64  # crops per call an automatic plan tries at most (the preset's tiles.batch_size maximum)


@dataclass(frozen=True)
class Measurement:
    """One measured model call: ``rows`` crops of ``cells`` latent cells each, ``seconds`` per
    call (median), ``extra_bytes`` of peak memory beyond the model's weights; ``what``: how."""

    rows: int
    cells: int
    seconds: float
    extra_bytes: float
    what: str = ""


@dataclass(frozen=True)
class CostModel:
    """A fitted cost model of one model architecture on one device, dtype and attention kernel.

    ``source``: where the measurements come from (machine, command, date). Times in seconds,
    memory in bytes; ``weights_bytes``: the resident weights (UNet, text encoder, VAE).
    ``family`` (as `lib_mixture_webui.families` names it), ``device`` (a torch device type) and
    ``dtype`` say which hosts it describes; ``tile_sides``: the smallest and largest square tile
    (px) an automatic plan may choose for this model, the band it makes good images in."""

    name: str
    source: str
    weights_bytes: float
    call: float
    row_cell: float
    row_cell2: float
    base_bytes: float
    row_cell_bytes: float
    row_cell2_bytes: float = 0.0
    measurements: tuple[Measurement, ...] = field(default_factory=tuple)
    family: str = "sd1"
    device: str = "cuda"
    dtype: str = "fp16"
    tile_sides: tuple[int, int] = (512, 768)

    def sides(self, step: int = SIDE_STEP) -> tuple[int, ...]:
        """The square tile sides (px) an automatic plan tries: ``tile_sides`` every ``step`` px."""
        lo, hi = self.tile_sides
        return tuple(range(lo, hi + 1, step))

    def call_seconds(self, rows: int, cells: int) -> float:
        """Predicted seconds of one model call on ``rows`` crops of ``cells`` latent cells."""
        return self.call + self.row_cell * rows * cells + self.row_cell2 * rows * cells * cells

    def call_bytes(self, rows: int, cells: int) -> float:
        """Predicted peak activation memory of that call, beyond the weights, in bytes."""
        return self.base_bytes + self.row_cell_bytes * rows * cells + self.row_cell2_bytes * rows * cells * cells

    def step(self, groups: Iterable[tuple[int, int]], batch_size: int, rows_per_crop: int = ROWS_PER_CROP
             ) -> tuple[float, float]:
        """``(seconds, peak_bytes)`` of one sampling step over crop ``groups`` ``(count, cells)``
        at ``batch_size`` crops a call, split as the engine splits them (`lib_mixture.mixture`:
        ceil(count / batch_size) calls of equal size, the last one smaller); the peak includes the
        weights."""
        seconds, peak = 0.0, 0.0
        for count, cells in groups:
            calls = math.ceil(count / batch_size)
            size = math.ceil(count / calls)
            last = count - size * (calls - 1)
            seconds += ((calls - 1) * self.call_seconds(size * rows_per_crop, cells)
                        + self.call_seconds(last * rows_per_crop, cells))
            peak = max(peak, self.call_bytes(size * rows_per_crop, cells))
        return seconds, self.weights_bytes + peak

    def to_json(self) -> str:
        data = asdict(self)
        data["measurements"] = [asdict(m) for m in self.measurements]
        return json.dumps(data, indent=2) + "\n"


def _least_squares(columns: Sequence[Sequence[float]], target: Sequence[float]) -> list[float]:
    """Coefficients ``c`` minimising sum_i ((sum_j c_j columns[j][i]) / target_i - 1)^2: a
    relative-error fit, by the normal equations (a handful of unknowns)."""
    k = len(columns)
    scaled = [[col[i] / target[i] for i in range(len(target))] for col in columns]
    norms = [math.sqrt(sum(v * v for v in col)) or 1.0 for col in scaled]  # unit columns: terms of any size
    scaled = [[v / n for v in col] for col, n in zip(scaled, norms)]
    a = [[sum(x * y for x, y in zip(scaled[r], scaled[c])) for c in range(k)] for r in range(k)]
    b = [sum(scaled[r]) for r in range(k)]
    for col in range(k):  # Gaussian elimination with partial pivoting
        pivot = max(range(col, k), key=lambda r: abs(a[r][col]))
        a[col], a[pivot], b[col], b[pivot] = a[pivot], a[col], b[pivot], b[col]
        if abs(a[col][col]) <= 1e-12:
            raise ValueError("the measurements do not determine the coefficients (add other sizes)")
        for r in range(col + 1, k):
            f = a[r][col] / a[col][col]
            a[r] = [x - f * y for x, y in zip(a[r], a[col])]
            b[r] -= f * b[col]
    out = [0.0] * k
    for r in reversed(range(k)):
        out[r] = (b[r] - sum(a[r][c] * out[c] for c in range(r + 1, k))) / a[r][r]
    return [c / n for c, n in zip(out, norms)]


def _non_negative_fit(columns: Sequence[Sequence[float]], target: Sequence[float]) -> list[float]:
    """`_least_squares` with every coefficient >= 0: a term whose fit is negative (noise, or a
    term the device does not show) is dropped and the rest fitted again."""
    active = list(range(len(columns)))
    while True:
        coef = _least_squares([columns[j] for j in active], target)
        worst = min(range(len(active)), key=lambda i: coef[i])
        if coef[worst] >= 0 or len(active) == 1:
            out = [0.0] * len(columns)
            for j, c in zip(active, coef):
                out[j] = max(c, 0.0)
            return out
        del active[worst]


def fit(name: str, source: str, weights_bytes: float, measurements: Sequence[Measurement],
        quadratic_memory: bool = False, **host: object) -> CostModel:
    """The `CostModel` fitted to ``measurements`` (at least 3 of different sizes; ``quadratic_memory``
    for an attention kernel whose memory grows with the square of the tokens; ``host``: its
    ``family``, ``device``, ``dtype`` and ``tile_sides``); coefficients are never negative.
    ValueError when the measurements cannot determine it."""
    rc = [float(m.rows * m.cells) for m in measurements]
    rc2 = [float(m.rows * m.cells * m.cells) for m in measurements]
    ones = [1.0] * len(measurements)
    t = _non_negative_fit([ones, rc, rc2], [m.seconds for m in measurements])
    b = _non_negative_fit([ones, rc] + ([rc2] if quadratic_memory else []),
                          [max(m.extra_bytes, 1.0) for m in measurements]) + ([] if quadratic_memory else [0.0])
    return CostModel(name, source, weights_bytes, t[0], t[1], t[2], b[0], b[1], b[2], tuple(measurements), **host)


@functools.lru_cache(maxsize=None)
def load(name: str) -> CostModel:
    """The cost model ``lib_mixture/costs/<name>.json``; KeyError naming the ones there are."""
    path = FOLDER / f"{name}.json"
    if not path.is_file():
        raise KeyError(f"no cost model {name!r}; there are: {', '.join(sorted(available()))}")
    data = json.loads(path.read_text(encoding="utf-8"))
    data["measurements"] = tuple(Measurement(**m) for m in data.get("measurements", ()))
    if "tile_sides" in data:
        data["tile_sides"] = tuple(data["tile_sides"])
    return CostModel(**data)


def for_host(family: str, device: str, dtype: str) -> CostModel | None:
    """The stored model measured for ``family`` on a ``device`` type with ``dtype`` (``fp16``,
    ``bf16`` or ``fp32``; the first by name where several are), else one of that family and
    device in another dtype with its memory scaled by the bytes per value (the activations
    dominate; the time is kept); None when none is stored for the family and device."""
    models = [load(name) for name in available()]
    same = [m for m in models if m.family == family and m.device == device]
    for m in same:
        if m.dtype == dtype:
            return m
    if not same:
        return None
    m = same[0]
    ratio = _BYTES[dtype] / _BYTES[m.dtype]
    return replace(m, name=f"{m.name} (memory x{ratio:g} for {dtype})", weights_bytes=m.weights_bytes * ratio,
                   base_bytes=m.base_bytes * ratio, row_cell_bytes=m.row_cell_bytes * ratio,
                   row_cell2_bytes=m.row_cell2_bytes * ratio, dtype=dtype)


_BYTES = {"fp16": 2, "bf16": 2, "fp32": 4}


def estimate(plan, model: CostModel | None = None) -> tuple[float, float]:
    """``(seconds per step, peak bytes)`` of a `lib_mixture.plan.MixturePlan` (one image, cond
    and uncond rows) under ``model`` (the `DEFAULT` one)."""
    return (model or load(DEFAULT)).step(plan.groups(), plan.batch_size)


def available() -> list[str]:
    return sorted(p.stem for p in FOLDER.glob("*.json"))


@dataclass(frozen=True)
class Choice:
    """A tile grid and batch size with their predicted cost: ``tile_width`` x ``tile_height`` px
    (None: no tile grid, regions only), ``tiles`` of them, ``batch_size`` crops a call, ``calls``
    per step, ``seconds`` per step, ``peak_bytes`` (weights included)."""

    tile_width: int | None
    tile_height: int | None
    tiles: int
    batch_size: int
    calls: int
    seconds: float
    peak_bytes: float


@dataclass(frozen=True)
class Grid:
    """One candidate grid: its tile size (px; None without tiles), its tile count, and the
    ``(count, latent cells)`` groups of every crop of a step (tiles and regions)."""

    tile_width: int | None
    tile_height: int | None
    tiles: int
    groups: tuple[tuple[int, int], ...]


def rank(model: CostModel, grids: Iterable[Grid], batches: Sequence[int] | None = None, max_batch: int = MAX_BATCH,
         rows_per_crop: int = ROWS_PER_CROP) -> list[Choice]:
    """Every grid at every batch size (``batches``, default 1 to ``max_batch`` less the sizes that
    make no fewer calls than one smaller) with its predicted cost, fastest first (ties: the
    smaller peak). ``rows_per_crop``: cond and uncond rows of every image of the job's batch."""
    out = []
    for g in grids:
        largest = max(count for count, _ in g.groups)
        for batch in (batches or range(1, min(max_batch, largest) + 1)):
            calls = sum(math.ceil(count / batch) for count, _ in g.groups)
            if batches is None and batch > 1 and calls == sum(math.ceil(c / (batch - 1)) for c, _ in g.groups):
                continue  # as many calls as one crop fewer a call, and more memory
            seconds, peak = model.step(g.groups, batch, rows_per_crop)
            out.append(Choice(g.tile_width, g.tile_height, g.tiles, batch, calls, seconds, peak))
    out.sort(key=lambda c: (c.seconds, c.peak_bytes))
    return out


def within(choices: Sequence[Choice], budget_bytes: float) -> list[Choice]:
    """The choices whose predicted peak fits ``budget_bytes``, in their order."""
    return [c for c in choices if c.peak_bytes <= budget_bytes]


def tile_grids(canvas_width: int, canvas_height: int, overlap: int | tuple[int, int], sides: Iterable[int],
               factor: int = 8) -> list[Grid]:
    """The square tile grids of ``sides`` px (clamped to the canvas; a side the overlap does not
    fit below is left out) at ``overlap`` px (one value or ``(x, y)``), as `Grid`s."""
    seen, out = set(), []
    for side in sides:
        tw, th = min(side, canvas_width), min(side, canvas_height)
        if (tw, th) in seen:
            continue
        seen.add((tw, th))
        try:
            n = len(plan_tiles(canvas_width, canvas_height, tw, th, overlap, factor).tiles)
        except ValueError:  # the overlap does not fit this tile
            continue
        out.append(Grid(tw, th, n, ((n, (tw // factor) * (th // factor)),)))
    return out


def choose(model: CostModel, canvas_width: int, canvas_height: int, overlap: int, budget_bytes: float,
           tile_sides: Sequence[int] | None = None, max_batch: int = MAX_BATCH,
           factor: int = 8) -> tuple[Choice, list[Choice]]:
    """The square tile grid (sides ``tile_sides`` px, default the model's band, at least
    ``overlap`` px apart; sides beyond the canvas are clamped to it) and batch size with the
    lowest predicted step time whose peak fits ``budget_bytes``, and every candidate that fits,
    fastest first. ValueError when none fits."""
    sides = tuple(tile_sides) if tile_sides is not None else model.sides()
    fits = within(rank(model, tile_grids(canvas_width, canvas_height, overlap, sides, factor), max_batch=max_batch),
                  budget_bytes)
    if not fits:
        smallest = min(sides)
        need = model.step([(1, (smallest // factor) ** 2)], 1)[1]
        raise ValueError(f"no tile grid fits {budget_bytes / GIB:.2f} GiB with {model.name}: one {smallest} px tile "
                         f"needs {need / GIB:.2f} GiB")
    return fits[0], fits
