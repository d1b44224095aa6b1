"""The settings of a tiled VAE call, its callbacks and its interruption error (public types)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

ProgressFn = Callable[[int, int], None]
StopFn = Callable[[], object]


DEVICE_MEMORY_FRACTION = 0.75  # of the free CUDA memory, for the tiles and their stash
HOST_MEMORY_FRACTION = 0.4  # of the host's available memory, when the VAE runs on the CPU


@dataclass
class TiledVAEConfig:
    """Settings of :func:`tiled_decode` / :func:`tiled_encode`.

    Attributes:
        tile_size: edge of a tile's core in **latent** pixels (1 latent px = 8 image px for
            SD VAEs), for the full-resolution part of the network. ``None`` picks it from
            ``memory_mib``, else from the free device memory on CUDA
            (``torch.cuda.mem_get_info``), else uses ``cpu_tile_size``. The latent-resolution
            parts get larger tiles with the same memory unless ``scale_low_res_tiles`` is off.
        memory_mib: device memory, in MiB, this call may plan for (tiles, the segments' buffers
            and a device stash), on any device; ``None`` reads the free memory on CUDA
            (times ``memory_fraction``) and has no budget elsewhere.
        min_tile_size: smallest tile edge the out-of-memory retry goes down to.
        max_tiles: refuse (``ValueError``) plans with more tiles per pass than this.
        memory_fraction: share of the free CUDA memory the automatic tile size plans for.
        cpu_tile_size: automatic tile edge off CUDA (CPU, MPS...).
        scale_low_res_tiles: give the latent-resolution segments the tile edge that uses the
            same memory as ``tile_size`` at full resolution (fewer, larger tiles).
        attention_chunk_mib: memory for one chunk of attention scores (queries x keys).
        offload: keep the latent-resolution buffers and the output on the CPU; tiles are
            copied to the compute device one at a time. The result is returned on the CPU.
        stash_mib: host (CPU) memory, in MiB, for keeping every tile's activations between
            the GroupNorm passes. 0 (default) recomputes each tile from the segment input in
            every pass: memory independent of the image, about ``K/2`` times the compute for
            ``K`` GroupNorms. With a stash, each tile whose activations fit in the budget
            resumes where the previous pass stopped (roughly 2-3 full-resolution activations
            hold every tile: single-pass speed); the result is the same either way.
        stash_on_device: keep the stash on the compute device instead of host memory: no
            copies between passes. The stash then shares the device budget with the tiles
            (``memory_mib`` or the free CUDA memory): with ``tile_size=None`` the tile edge of
            each segment is the one with the least predicted work (:func:`.sizing.choose`) for
            the stash the rest of the budget holds, and ``stash_mib`` > 0 caps that stash. A
            stash that does not hold every tile holds as many as fit, and the others recompute.
    """

    tile_size: Optional[int] = None
    min_tile_size: int = 8
    max_tiles: int = 4096
    memory_fraction: float = DEVICE_MEMORY_FRACTION
    cpu_tile_size: int = 64
    scale_low_res_tiles: bool = True
    attention_chunk_mib: int = 256
    offload: bool = False
    stash_mib: int = 0
    stash_on_device: bool = False
    memory_mib: Optional[int] = None

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field."""
        if self.tile_size is not None and (not isinstance(self.tile_size, int) or self.tile_size < 1):
            raise ValueError(f"tile_size must be a positive int (latent pixels) or None, got {self.tile_size!r}")
        if not isinstance(self.min_tile_size, int) or self.min_tile_size < 1:
            raise ValueError(f"min_tile_size must be a positive int, got {self.min_tile_size!r}")
        if self.tile_size is not None and self.tile_size < self.min_tile_size:
            raise ValueError(
                f"tile_size={self.tile_size} is below min_tile_size={self.min_tile_size}; "
                "raise tile_size or lower min_tile_size"
            )
        if not isinstance(self.max_tiles, int) or self.max_tiles < 1:
            raise ValueError(f"max_tiles must be a positive int, got {self.max_tiles!r}")
        if not (0.0 < float(self.memory_fraction) <= 1.0):
            raise ValueError(f"memory_fraction must be in (0, 1], got {self.memory_fraction!r}")
        if not isinstance(self.cpu_tile_size, int) or self.cpu_tile_size < 1:
            raise ValueError(f"cpu_tile_size must be a positive int, got {self.cpu_tile_size!r}")
        if self.memory_mib is not None and (not isinstance(self.memory_mib, int) or self.memory_mib < 1):
            raise ValueError(f"memory_mib must be a positive int (MiB) or None, got {self.memory_mib!r}")
        if not isinstance(self.stash_mib, int) or self.stash_mib < 0:
            raise ValueError(f"stash_mib must be an int >= 0, got {self.stash_mib!r}")
        if not isinstance(self.attention_chunk_mib, int) or self.attention_chunk_mib < 1:
            raise ValueError(f"attention_chunk_mib must be a positive int, got {self.attention_chunk_mib!r}")


class TiledVAEInterrupted(RuntimeError):
    """Raised when ``should_stop()`` returns a true value."""
