"""The mixture step: one canvas prediction as the weighted mean of crop predictions.

Paper, eq. 16: ``eps(x) = Z * sum_i w_i * Pad_i(eps_i(x[r_i]))`` with ``Z = 1 / sum_i w_i``.
The weights never change during sampling, so `compile_mixture` divides them by their
per-pixel sum once; each step is then only crop -> predict -> multiply-add into one
canvas-sized buffer. Crops of equal size and guidance scale go to the host together, in
batches of at most ``batch_size``.

Shapes: the canvas ``x`` is ``[B, C, H, W]`` (latent); a batch of ``K`` crops of size
``h x w`` reaches ``predict`` as ``[K * B, C, h, w]``, crop-major (rows ``k*B .. k*B+B-1``
belong to crop ``k``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence, Union

import torch

from .geometry import LATENT_FACTOR, Box
from .plan import CropSpec
from .weights import DEFAULT_CACHE, WeightCache


class UncoveredCanvasError(ValueError):
    """Some latent pixels are covered by no crop: the mixture has nothing to put there."""


Prediction = Union[torch.Tensor, tuple]
Predict = Callable[[torch.Tensor, Any, Sequence[CropSpec]], Prediction]


@dataclass
class CompiledMixture:
    """A mixture ready to run on one latent canvas size and device.

    ``weights[i]`` is crop ``i``'s normalised weight map ``[h, w]``; over every canvas pixel
    the maps of the crops covering it sum to 1. ``batches`` lists crop indices per host call.
    """

    height: int
    width: int
    crops: tuple[CropSpec, ...]
    weights: tuple[torch.Tensor, ...]
    batches: tuple[tuple[int, ...], ...]

    @property
    def model_calls_per_step(self) -> int:
        return len(self.batches)

    def __call__(self, x: torch.Tensor, sigma: Any, predict: Predict,
                 on_batch: Callable[[int, int], None] | None = None) -> Prediction:
        """Mix ``predict`` over the crops for canvas ``x``.

        ``sigma`` is passed to ``predict`` repeated per crop when it is a per-sample tensor
        ``[B]``, as is. ``predict`` may return one tensor or a tuple of tensors (say the
        denoised image and its x0 estimate); each is mixed and the same structure returned.
        ``on_batch(i, n)`` runs before host call ``i`` of ``n`` (progress, interrupts).
        """
        if x.shape[-2:] != (self.height, self.width):
            raise ValueError(f"canvas latent is {tuple(x.shape[-2:])}, the mixture was compiled for "
                             f"{(self.height, self.width)}")
        rows_per_crop = x.shape[0]
        outputs: list[torch.Tensor] | None = None
        dtypes: list[torch.dtype] = []
        single = True
        for number, batch in enumerate(self.batches):
            if on_batch is not None:
                on_batch(number, len(self.batches))
            specs = [self.crops[i] for i in batch]
            # A copy, never a view: a host that edits its input in place must not touch x.
            x_in = torch.cat([_crop(x, s.box) for s in specs]) if len(specs) > 1 else _crop(x, specs[0].box).contiguous()
            sigma_in = _repeat_rows(sigma, len(specs), rows_per_crop)
            pred = predict(x_in, sigma_in, specs)
            single = isinstance(pred, torch.Tensor)
            preds = (pred,) if single else tuple(pred)
            if outputs is None:
                # float32 accumulation, so fp16 predictions still sum their weights to 1.
                outputs = [x.new_zeros((rows_per_crop, *p.shape[1:-2], self.height, self.width),
                                       dtype=torch.promote_types(p.dtype, torch.float32)) for p in preds]
                dtypes = [p.dtype for p in preds]
            for k, index in enumerate(batch):
                rows, cols = self.crops[index].box.slices()
                w = self.weights[index]
                for out, p in zip(outputs, preds):
                    out[:, :, rows, cols].addcmul_(p[k * rows_per_crop:(k + 1) * rows_per_crop], w)
            del x_in, pred, preds  # free this batch before the next one is built: memory stays one batch
        assert outputs is not None, "a compiled mixture always has at least one batch"
        mixed = tuple(out.to(dtype) for out, dtype in zip(outputs, dtypes))
        return mixed[0] if single else mixed


def compile_mixture(crops: Sequence[CropSpec], height: int, width: int, batch_size: int = 1,
                    device: torch.device | str = "cpu", cache: WeightCache = DEFAULT_CACHE,
                    factor: int = LATENT_FACTOR) -> CompiledMixture:
    """Normalise the crops' weights over a ``height x width`` latent canvas and batch them.

    Raises `UncoveredCanvasError` naming the bounding box of latent pixels no crop covers.
    """
    if not crops:
        raise ValueError("a mixture needs at least one crop")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = torch.device(device)
    raw = []
    total = torch.zeros(height, width, dtype=torch.float64, device=device)
    for i, spec in enumerate(crops):
        b = spec.box
        if b.x < 0 or b.y < 0 or b.right > width or b.bottom > height or b.width < 1 or b.height < 1:
            raise ValueError(f"crop {i} latent box {b.as_list()} is outside the {width}x{height} latent canvas")
        if not spec.weight > 0 or not math.isfinite(spec.weight):
            raise ValueError(f"crop {i} weight must be a positive finite number, got {spec.weight}")
        w = cache.get(spec.kind, b.height, b.width, spec.variance, torch.float64, device) * spec.weight
        raw.append(w)
        rows, cols = b.slices()
        total[rows, cols] += w
    uncovered = total == 0
    if bool(uncovered.any()):
        ys, xs = torch.nonzero(uncovered, as_tuple=True)
        y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        raise UncoveredCanvasError(
            f"latent pixels in box x={x0} y={y0} width={x1 - x0} height={y1 - y0} "
            f"(pixels x={x0 * factor} y={y0 * factor} width={(x1 - x0) * factor} height={(y1 - y0) * factor}) "
            "are covered by no "
            "region: add a region there or enable the background tile grid")
    weights = []
    for spec, w in zip(crops, raw):
        rows, cols = spec.box.slices()
        weights.append((w / total[rows, cols]).to(torch.float32))
    return CompiledMixture(height, width, tuple(crops), tuple(weights), _batches(crops, batch_size))


def _batches(crops: Sequence[CropSpec], batch_size: int) -> tuple[tuple[int, ...], ...]:
    """Group crops by (size, guidance scale, batch key), then split each group into balanced batches.

    Balanced: 9 crops at batch size 8 make two calls of 5 and 4, not 8 and 1, so the host
    sees fewer distinct shapes and the peak memory is lower for the same number of calls.
    """
    groups: dict[tuple, list[int]] = {}
    for i, spec in enumerate(crops):
        groups.setdefault((spec.box.width, spec.box.height, spec.cfg_scale, spec.batch_key), []).append(i)
    batches = []
    for members in groups.values():
        count = math.ceil(len(members) / batch_size)
        size = math.ceil(len(members) / count)
        batches.extend(tuple(members[j:j + size]) for j in range(0, len(members), size))
    return tuple(batches)


def _crop(x: torch.Tensor, box: Box) -> torch.Tensor:
    rows, cols = box.slices()
    return x[:, :, rows, cols]


def _repeat_rows(value: Any, copies: int, rows: int) -> Any:
    if isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == rows and copies > 1:
        return value.repeat(copies, *([1] * (value.ndim - 1)))
    return value
