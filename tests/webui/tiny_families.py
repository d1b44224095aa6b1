"""Tiny random-weight checkpoints of SDXL base, SDXL refiner and SD 2.x (v-prediction) that
an A1111 WebUI v1.10.1 loads offline.

How each is built
-----------------
The builder starts from the real inference config of each family, as the WebUI itself would use
it, and only makes it small:

* ``sdxl``: ``generative-models/configs/inference/sd_xl_base.yaml`` (``sgm`` ``DiffusionEngine``).
* ``sdxl-refiner``: ``generative-models/configs/inference/sd_xl_refiner.yaml``.
* ``sd2-v``: ``stable-diffusion-stability-ai/configs/stable-diffusion/v2-inference-v.yaml``
  (``ldm`` ``LatentDiffusion`` with ``parameterization: "v"``).

Shrinking (OmegaConf edits of the loaded yaml; every ``target`` class, embedder order and
``input_key`` stays as in the real file, so the state-dict key names are the real ones):

* UNet: ``model_channels`` 32, ``channel_mult`` [1, 2, 2] (three levels for all three families,
  so any canvas whose sides are multiples of 32 px works, the refiner's too), ``num_res_blocks`` 1,
  ``num_head_channels`` 16, transformer depth 1 at every level; ``attention_resolutions`` as the
  real model ([4, 2] for SDXL and the refiner, [4, 2, 1] for SD 2.x), linear projections in the
  transformers as the real model.
* Text encoders: the smallest OpenCLIP text tower in open_clip's own registry,
  ``arch: ViT-S-32-alt`` (width 256, 4 heads, 10 layers, projection 256), with ``version: null``
  so nothing is downloaded (the WebUI also forces ``pretrained=None`` when the checkpoint holds
  the text encoder). SDXL's CLIP-L slot is sgm's ``FrozenCLIPEmbedder`` whose ``version:`` is a
  local folder (``tiny-clip-text/``: the small HF ``CLIPTextConfig`` and the tokenizer files that
  ``tiny_checkpoint.py`` writes: hidden 64, 2 layers), ``layer: hidden`` with ``layer_idx`` 1,
  the penultimate layer as the real model's 11 of 12.
* SDXL conditioning widths follow from those: base ``context_dim`` = 64 + 256 = 320 and
  ``adm_in_channels`` = 256 (pooled OpenCLIP) + 6 * 256 (original size, crop, target size, each
  two ``ConcatTimestepEmbedderND`` values of outdim 256 as the real model) = 1792; refiner
  ``context_dim`` 256 at every level and ``adm_in_channels`` = 256 + 5 * 256 (original size,
  crop, aesthetic score) = 1536. SD 2.x: ``context_dim`` 256, ``layer: penultimate``.
* VAE: ``ch`` 32 (GroupNorm(32) needs multiples of 32), ``ch_mult`` [1, 1, 2, 2] (keeps the 8x
  downsample), ``num_res_blocks`` 1; ``scale_factor`` as the real model.

The shrunk config is instantiated with the libraries' own ``instantiate_from_config``
(``sgm.util`` / ``ldm.util``; for that only, ``use_checkpoint`` off, ``use_fp16`` off and
``vanilla`` VAE attention, the same repairs the WebUI makes when it loads the yaml). Then every
parameter gets seeded random values, one generator per parameter seeded from the seed and the
parameter's name (so the values do not depend on module order or on how the libraries
initialised them): weights ``randn / sqrt(fan_in)`` (fan-in = product of all but the first
dimension; OpenCLIP's ``text_projection``, used as ``x @ P``, has fan-in ``P.shape[0]``),
embedding tables and OpenCLIP's ``positional_embedding`` ``0.02 * randn``, norm weights
``1 + 0.1 * randn``, biases (norm biases included) ``0.1 * randn``. So the layers the libraries
zero-initialise (output convs of residual blocks, transformer ``proj_out``, the UNet's last conv)
are non-zero (else the output ignores the prompt), and the final CLIP / OpenCLIP LayerNorms have a
random affine (with weight 1 / bias 0 every token vector is zero-mean and the WebUI's "Original"
emphasis divides 0 by 0). OpenCLIP's scalar ``logit_scale`` (unused for text encoding) keeps its
constant initial value. Buffers (the noise schedule, ``position_ids``) are kept as the libraries
compute them. The state dict is saved as float32 safetensors with one metadata key (so the file
is byte-identical between builds), and the shrunk yaml is written beside it under the same base
name, which is how the WebUI finds a checkpoint's config.

Output files (``OUT_DIR``): ``tiny-sdxl.safetensors`` / ``.yaml``, ``tiny-sdxl-refiner.*``,
``tiny-sd2-v.*``, and ``tiny-clip-text/`` for SDXL's CLIP-L slot. Never committed.

``write_sdxl_approx(models_dir)`` writes ``VAE-approx/vaeapprox-sdxl.pt``: a random "Approx NN"
live-preview network (the WebUI loads it at the start of every SDXL job and otherwise tries to
download it), saved with torch's legacy (non-zip) serialisation, which the WebUI's restricted
unpickler accepts.

Runs in the WebUI's venv (torch, omegaconf, safetensors, open_clip, transformers, pytorch
lightning); ``sgm`` and ``ldm`` come from ``$MOD_WEBUI_DIR/repositories`` unless importable
already (inside a booted WebUI they are). Usage::

    MOD_WEBUI_DIR=/path/to/webui /path/to/webui/venv/bin/python tests/webui/tiny_families.py OUT_DIR sdxl
    python tests/webui/tiny_families.py OUT_DIR all      # the three families
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import math
import os
import sys
import zlib
from pathlib import Path
from typing import Dict, Iterator, Optional

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

FAMILIES = ("sdxl", "sdxl-refiner", "sd2-v")
NAMES = {"sdxl": "tiny-sdxl", "sdxl-refiner": "tiny-sdxl-refiner", "sd2-v": "tiny-sd2-v"}
DEFAULT_SEED = 1234
METADATA_KEY = "tiny_checkpoint"
METADATA_VALUE = "sd-webui-mixture-of-diffusers random test model v1 ({family})"
APPROX_NAME = "vaeapprox-sdxl.pt"

OPENCLIP_ARCH = "ViT-S-32-alt"
OPENCLIP_WIDTH = 256  # text_cfg.width of ViT-S-32-alt: token width (context) and pooled width
SIZE_EMBED_DIM = 256  # ConcatTimestepEmbedderND outdim, as in the real SDXL configs
CLIP_LAYER_IDX = 1  # penultimate hidden state of the 2-layer tiny CLIP-L (the real one: 11 of 12)

UNET = dict(
    model_channels=32,
    channel_mult=[1, 2, 2],
    num_res_blocks=1,
    num_head_channels=16,
)
VAE = dict(ch=32, ch_mult=[1, 1, 2, 2], num_res_blocks=1)

REAL_CONFIGS = {
    "sdxl": ("generative-models", "configs/inference/sd_xl_base.yaml"),
    "sdxl-refiner": ("generative-models", "configs/inference/sd_xl_refiner.yaml"),
    "sd2-v": ("stable-diffusion-stability-ai", "configs/stable-diffusion/v2-inference-v.yaml"),
}


# ---- where sgm / ldm and the real configs are ---------------------------------------------

def _repo_dirs(webui_dir=None) -> Dict[str, Path]:
    """The two repositories: from ``webui_dir``/``MOD_WEBUI_DIR``, else from the imported packages."""
    base = webui_dir or os.environ.get("MOD_WEBUI_DIR")
    if base:
        repos = Path(base).resolve() / "repositories"
        return {"generative-models": repos / "generative-models",
                "stable-diffusion-stability-ai": repos / "stable-diffusion-stability-ai"}
    out = {}
    for name, pkg in (("generative-models", "sgm"), ("stable-diffusion-stability-ai", "ldm")):
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.origin:
            raise ImportError(f"{pkg} is not importable: set MOD_WEBUI_DIR to a WebUI folder "
                              f"(the builder uses its repositories/{name})", name=pkg)
        out[name] = Path(spec.origin).resolve().parent.parent
    return out


def add_repositories(webui_dir=None) -> Dict[str, Path]:
    """Put the WebUI's ``generative-models`` and ``stable-diffusion-stability-ai`` on sys.path."""
    dirs = _repo_dirs(webui_dir)
    for d in dirs.values():
        if not d.is_dir():
            raise ImportError(f"{d} not found (MOD_WEBUI_DIR must name a WebUI with its repositories/)")
        if str(d) not in sys.path:
            sys.path.append(str(d))
    return dirs


# ---- configs --------------------------------------------------------------------------------

def _shrink_vae(first_stage) -> None:
    dd = first_stage.params.ddconfig
    dd.ch = VAE["ch"]
    dd.ch_mult = list(VAE["ch_mult"])
    dd.num_res_blocks = VAE["num_res_blocks"]


def _shrink_unet(params, context_dim, transformer_depth) -> None:
    params.model_channels = UNET["model_channels"]
    params.channel_mult = list(UNET["channel_mult"])
    params.num_res_blocks = UNET["num_res_blocks"]
    params.num_head_channels = UNET["num_head_channels"]
    params.transformer_depth = transformer_depth
    params.context_dim = context_dim


def shrunk_config(family: str, clip_dir: Path, webui_dir=None):
    """The real config of ``family`` made tiny (an OmegaConf object: what the yaml beside holds)."""
    from omegaconf import OmegaConf

    import tiny_checkpoint as sd1

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; one of {', '.join(FAMILIES)}")
    repo, rel = REAL_CONFIGS[family]
    cfg = OmegaConf.load(add_repositories(webui_dir)[repo] / rel)
    p = cfg.model.params
    levels = len(UNET["channel_mult"])
    clip_l_width = sd1.CLIP_TEXT["hidden_size"]

    if family == "sdxl":
        embs = p.conditioner_config.params.emb_models
        targets = [e.target.rsplit(".", 1)[-1] for e in embs]
        assert targets == ["FrozenCLIPEmbedder", "FrozenOpenCLIPEmbedder2"] + ["ConcatTimestepEmbedderND"] * 3, targets
        assert CLIP_LAYER_IDX < sd1.CLIP_TEXT["num_hidden_layers"]
        embs[0].params.version = str(clip_dir)
        embs[0].params.layer_idx = CLIP_LAYER_IDX
        embs[1].params.arch = OPENCLIP_ARCH
        embs[1].params.version = None
        for e in embs[2:]:
            assert e.params.outdim == SIZE_EMBED_DIM
        net = p.network_config.params
        _shrink_unet(net, clip_l_width + OPENCLIP_WIDTH, [1] * levels)
        net.adm_in_channels = OPENCLIP_WIDTH + 3 * 2 * SIZE_EMBED_DIM
    elif family == "sdxl-refiner":
        embs = p.conditioner_config.params.emb_models
        targets = [e.target.rsplit(".", 1)[-1] for e in embs]
        assert targets == ["FrozenOpenCLIPEmbedder2"] + ["ConcatTimestepEmbedderND"] * 3, targets
        assert [e.input_key for e in embs[1:]] == ["original_size_as_tuple", "crop_coords_top_left",
                                                    "aesthetic_score"]
        embs[0].params.arch = OPENCLIP_ARCH
        embs[0].params.version = None
        net = p.network_config.params
        _shrink_unet(net, [OPENCLIP_WIDTH] * levels, 1)
        net.adm_in_channels = OPENCLIP_WIDTH + (2 + 2 + 1) * SIZE_EMBED_DIM
    else:  # sd2-v
        assert p.parameterization == "v"
        cond = p.cond_stage_config
        assert cond.target.endswith("encoders.modules.FrozenOpenCLIPEmbedder"), cond.target
        cond.params.arch = OPENCLIP_ARCH
        cond.params.version = None
        cond.params.layer = "penultimate"
        unet = p.unet_config.params
        _shrink_unet(unet, OPENCLIP_WIDTH, 1)
        assert unet.use_linear_in_transformer is True
    _shrink_vae(p.first_stage_config)
    return cfg


def _for_instantiation(cfg):
    """A copy with the repairs the WebUI makes on load (sd_models.repair_config)."""
    cfg = copy.deepcopy(cfg)
    p = cfg.model.params
    for key in ("network_config", "unet_config"):
        if key in p:
            p[key].params.use_checkpoint = False
            if "use_fp16" in p[key].params:
                p[key].params.use_fp16 = False
    dd = p.first_stage_config.params.ddconfig
    if dd.get("attn_type") == "vanilla-xformers":
        dd.attn_type = "vanilla"
    return cfg


@contextlib.contextmanager
def _clip_from_config_only() -> Iterator[None]:
    """sgm's FrozenCLIPEmbedder calls ``CLIPTextModel.from_pretrained(folder)``; the folder has a
    config and no weights (the weights come from here), so build the model from its config."""
    from transformers import CLIPTextConfig, CLIPTextModel

    missing = object()
    own = CLIPTextModel.__dict__.get("from_pretrained", missing)  # usually inherited

    def from_config(cls, name, *args, **kwargs):
        return cls(CLIPTextConfig.from_pretrained(name))

    CLIPTextModel.from_pretrained = classmethod(from_config)
    try:
        yield
    finally:
        if own is missing:
            del CLIPTextModel.from_pretrained
        else:
            CLIPTextModel.from_pretrained = own


def instantiate(cfg):
    """The model of an ldm or sgm config (the library its ``model.target`` names)."""
    add_repositories()
    if str(cfg.model.target).startswith("ldm."):
        from ldm.util import instantiate_from_config
    else:
        from sgm.util import instantiate_from_config
    with _clip_from_config_only():
        return instantiate_from_config(_for_instantiation(cfg).model)


# ---- random values ------------------------------------------------------------------------

def _generator(name: str, seed: int):
    import torch

    gen = torch.Generator(device="cpu")
    gen.manual_seed((seed * 1_000_003 + zlib.crc32(name.encode("utf-8"))) % (2**63))
    return gen


def _random_like(name: str, param, module, seed: int):
    import torch

    norms = (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.modules.batchnorm._NormBase)
    leaf = name.rsplit(".", 1)[-1]
    shape = tuple(param.shape)
    x = torch.randn(shape, generator=_generator(name, seed), dtype=torch.float32)
    if isinstance(module, norms):
        return 1.0 + 0.1 * x if leaf == "weight" else 0.1 * x
    if "bias" in leaf:
        return 0.1 * x
    if isinstance(module, torch.nn.Embedding) or leaf == "positional_embedding":
        return 0.02 * x
    if leaf == "text_projection":
        return x / math.sqrt(shape[0])
    if len(shape) >= 2:
        return x / math.sqrt(max(1, math.prod(shape[1:])))
    raise ValueError(f"no rule for parameter {name} {shape} in {type(module).__name__}")


KEEP_AS_INITIALISED = ("logit_scale",)


def randomize_(model, seed: int = DEFAULT_SEED):
    """Give every parameter of ``model`` seeded random values in place; buffers stay."""
    import torch

    with torch.no_grad():
        for mod_name, module in model.named_modules():
            for leaf, param in module.named_parameters(recurse=False):
                name = f"{mod_name}.{leaf}" if mod_name else leaf
                if leaf in KEEP_AS_INITIALISED:
                    continue
                param.copy_(_random_like(name, param, module, seed).to(param.dtype))
    return model


def state_dict_of(model) -> dict:
    """Own, contiguous CPU copies of the state dict, floating point as float32."""
    out = {}
    for k, v in model.state_dict().items():
        v = v.detach().to("cpu")
        out[k] = (v.float() if v.is_floating_point() else v).clone().contiguous()
    return out


# ---- the Approx NN preview network for SDXL ------------------------------------------------

# modules/sd_vae_approx.py VAEApprox: conv1..conv8 (out, in, kernel)
APPROX_LAYERS = [(8, 4, 7), (16, 8, 5), (32, 16, 3), (64, 32, 3), (32, 64, 3), (16, 32, 3), (8, 16, 3), (3, 8, 3)]


def write_sdxl_approx(models_dir, seed: int = DEFAULT_SEED) -> Path:
    """Write ``<models_dir>/VAE-approx/vaeapprox-sdxl.pt`` (random weights, legacy torch format)."""
    import torch

    path = Path(models_dir) / "VAE-approx" / APPROX_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {}
    for i, (cout, cin, k) in enumerate(APPROX_LAYERS, start=1):
        w = f"conv{i}.weight"
        sd[w] = torch.randn((cout, cin, k, k), generator=_generator(w, seed)) / math.sqrt(cin * k * k)
        b = f"conv{i}.bias"
        sd[b] = 0.1 * torch.randn((cout,), generator=_generator(b, seed))
    tmp = path.with_name(path.name + ".tmp")
    torch.save(sd, tmp, _use_new_zipfile_serialization=False)
    os.replace(tmp, path)
    return path


# ---- entry points -------------------------------------------------------------------------

def build(out_dir, family: str, seed: int = DEFAULT_SEED, webui_dir=None) -> Path:
    """Write the tiny ``family`` checkpoint and its yaml into ``out_dir``; return the .safetensors path."""
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    import tiny_checkpoint as sd1

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; one of {', '.join(FAMILIES)}")
    add_repositories(webui_dir)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    clip_dir = out / sd1.CLIP_DIR_NAME
    if family == "sdxl":
        clip_dir.mkdir(exist_ok=True)
        sd1.write_clip_config(clip_dir)
        sd1.write_tokenizer_files(clip_dir)
    cfg = shrunk_config(family, clip_dir, webui_dir)
    model = randomize_(instantiate(cfg), seed)
    sd = state_dict_of(model)
    del model
    name = NAMES[family]
    yaml_path = out / f"{name}.yaml"
    yaml_path.write_text(OmegaConf.to_yaml(cfg), encoding="utf-8")
    ckpt = out / f"{name}.safetensors"
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    save_file(sd, str(tmp), metadata={METADATA_KEY: METADATA_VALUE.format(family=family)})
    os.replace(tmp, ckpt)
    return ckpt


def build_all(out_dir, seed: int = DEFAULT_SEED, webui_dir=None) -> Dict[str, Path]:
    return {f: build(out_dir, f, seed, webui_dir) for f in FAMILIES}


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("family", choices=[*FAMILIES, "all"])
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--approx-models-dir", default=None,
                    help="also write VAE-approx/vaeapprox-sdxl.pt under this models folder")
    args = ap.parse_args(argv)
    for family in (FAMILIES if args.family == "all" else (args.family,)):
        print(build(args.out_dir, family, seed=args.seed))
    if args.approx_models_dir:
        print(write_sdxl_approx(args.approx_models_dir, seed=args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
