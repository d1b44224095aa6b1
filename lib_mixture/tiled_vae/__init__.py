"""Tiled VAE encode/decode with exact GroupNorm statistics and tile-bounded memory.

Why this exists
---------------
A VAE decode of a large image holds activations of ``128 x H x W`` (SD) at full image
resolution, which exhausts GPU memory long before the UNet does. Running the decoder
tile by tile bounds that memory, but every ``GroupNorm`` then normalises each tile with
its own statistics, which shifts colours per tile and draws seams.

How it works
------------
1. **Adapter** (:mod:`.adapters`, :mod:`.ops`). The VAE's encoder or decoder is walked into
   a flat *program* of primitive ops that reuse the module's own weights: ``Conv`` (any
   kernel/stride/dilation, with the asymmetric ``(0, 1, 0, 1)`` pre-pad of SD's
   downsampler), nearest ``Up`` x2, ``Pool``, ``Norm`` (GroupNorm), ``Act`` (pointwise),
   ``Save``/``AddSkip`` (residual connections) and ``Global`` (self-attention). Each op runs
   itself on a tile's state. Three adapters exist: diffusers ``AutoencoderKL``
   (``Encoder``/``Decoder`` with ``mid_block``, ``up_blocks``...), the ldm/sgm
   ``first_stage_model`` used by A1111 (``mid.block_1``, ``up[i].block``...), and plain
   ``nn.Sequential`` networks such as TAESD (no GroupNorm: one pass, exact tiles).
2. **Segments** (:mod:`.planning`). The program is cut (a) around every self-attention op,
   which is global and runs on a materialised buffer, and (b) where the data sits at the
   coarsest (latent) resolution next to a change of resolution. Everything at latent
   resolution is cheap and is kept as a full buffer; the expensive full-resolution part is
   one *tiled segment*.
3. **Exact tiles** (:mod:`.planning`, sized by :mod:`.sizing`). A tiled segment partitions
   its coarsest resolution into non-overlapping *cores*. For each core the required input
   region is planned backwards through the ops (receptive field, clipped at the image border
   where the real zero padding is re-created). Tiles therefore need no blending: the core of
   every tile is computed from exactly the inputs the full pass would use, and is written
   without overlap.
4. **Shared GroupNorm statistics, multi-pass** (:mod:`.groupnorm`, :mod:`.execute`). A
   segment with ``K`` GroupNorms on more than one tile takes ``K + 1`` passes over the tiles.
   Pass ``k`` recomputes each tile up to GroupNorm ``k`` (using the already-final statistics
   of GroupNorms ``0..k-1``) and measures per-tile, per-(sample, group)
   ``n_i, mean_i, var_i`` on the tile's *core* only, so each pixel is counted exactly once.
   The tiles are combined with the law of total variance ``mean = sum n_i mean_i / N``,
   ``var = sum n_i (var_i + (mean_i - mean)^2) / N``. The last pass writes the output. This
   trades compute (prefixes are recomputed, roughly ``K/2`` times the segment's cost) for
   memory that depends on the tile size only. A segment that fits in one tile is run once.
   A *stash* buys the compute back with memory: each tile's activations (and open residual
   branches) are kept between passes, tile by tile as far as the budget holds them
   (``TiledVAEConfig.stash_mib`` in host memory, or with ``stash_on_device`` on the compute
   device, no copies), so those tiles resume where the previous pass stopped.
5. **Sizing** (:mod:`.sizing`). A tile's peak memory and a stash's bytes are computed from the
   plans; :func:`.sizing.predict` counts the work of a segment's run pass by pass (convolution
   multiply-accumulates, pointwise elements, op calls), and with a device stash
   :func:`.sizing.choose` takes, within ``memory_mib`` or the free CUDA memory, the tile edge
   whose run with the rest of the budget as its stash is predicted least work.
6. **Attention** (:mod:`.attention`; the VAE mid block; 1 head, at latent resolution) is
   computed exactly over the whole latent: GroupNorm statistics over the full buffer, K and
   V for all tokens, queries in row chunks through ``scaled_dot_product_attention``, written
   back in place. This, with the latent-resolution buffers between stages, is the only
   memory that grows with the image: ``C_mid x h x w`` values per buffer (SD:
   ``C_mid = 512``), at most three at a time (buffer, K, V). With ``TiledVAEConfig.offload``
   they live in host memory and K/V are streamed to the device in blocks (online softmax),
   so device memory stays bounded.

The result equals the untiled computation up to float rounding (different summation order
in convolutions of different shapes and in the statistics).

Public API: :func:`tiled_decode`, :func:`tiled_encode`, :class:`TiledVAEConfig`,
:class:`TiledVAEInterrupted`, :func:`moments_to_latent`, :func:`plan_tiled_vae`,
:func:`min_memory`, :func:`tile_floor`.
"""

from .api import min_memory, moments_to_latent, plan_tiled_vae, tile_floor, tiled_decode, tiled_encode
from .config import TiledVAEConfig, TiledVAEInterrupted

__all__ = [
    "TiledVAEConfig",
    "TiledVAEInterrupted",
    "tiled_decode",
    "tiled_encode",
    "moments_to_latent",
    "min_memory",
    "plan_tiled_vae",
    "tile_floor",
]
