"""A random-weight checkpoint with the full-width SD 1.5 architecture, and a full-width random
ControlNet for it, for the tests a tiny model cannot do.

sd-webui-controlnet builds every SD 1.x ControlNet with a fixed width (320 channels, four levels,
two residual blocks: its ``controlnet_default_config``) and adds its 13 residuals to the UNet's
skips, so a ControlNet only drives a UNet of exactly that layout. These are that pair:

* ``full-sd15.safetensors`` (+ ``full-sd15.yaml`` beside it, as the WebUI finds a checkpoint's
  config): the WebUI's own ``configs/v1-inference.yaml`` unchanged (UNet 320 channels, mult
  [1, 2, 4, 4], 2 residual blocks, 8 heads, context 768; the KL VAE; 860 M + 84 M parameters),
  except that the CLIP text encoder's ``version`` is a local folder (``full-clip-text/``: the
  CLIP ViT-L/14 text config, 12 layers of 768, and the tokenizer files) so nothing downloads.
* ``full-controlnet-tile.safetensors``: ControlNet's own ``ControlNet`` class with its default SD 1.x
  config (3 hint channels, context 768; 361 M parameters) in the key layout ControlNet loads.

Every parameter gets seeded random values (`tiny_families.randomize_`: weights
``randn / sqrt(fan_in)``, norms ``1 + 0.1 randn``...), the zero-initialised layers included: the
zero convolutions then give non-zero residuals, so the control image changes the image. About
4.2 GB + 1.4 GB of float32 on disk, built in about a minute on two cores; never committed.

Needs a booted WebUI (its ``ldm``) and, for the ControlNet, sd-webui-controlnet's scripts loaded.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

CHECKPOINT_NAME = "full-sd15"
CLIP_DIR_NAME = "full-clip-text"
CONTROLNET_NAME = "full-controlnet-tile"  # "tile": upscale.controlnet_tile "auto" finds it
DEFAULT_SEED = 4321
METADATA = {"random_checkpoint": "sd-webui-mixture-of-diffusers full-width random test model v1"}
# the CLIP ViT-L/14 text tower of SD 1.x
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
              num_attention_heads=12, max_position_embeddings=77, projection_dim=768)


def _save(state: dict, path: Path, metadata: dict) -> Path:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path


def build_sd15(out_dir, seed: int = DEFAULT_SEED, webui_dir=None) -> Path:
    """Write the full-width SD 1.5-architecture checkpoint and its yaml into ``out_dir``; return
    the ``.safetensors`` path."""
    from omegaconf import OmegaConf

    import tiny_checkpoint as sd1
    import tiny_families

    webui = Path(webui_dir or os.environ.get("MOD_WEBUI_DIR") or os.getcwd()).resolve()
    out = Path(out_dir).resolve()
    clip_dir = out / CLIP_DIR_NAME
    clip_dir.mkdir(parents=True, exist_ok=True)
    sd1.write_tokenizer_files(clip_dir)
    sd1.write_clip_config(clip_dir, CLIP_L)
    cfg = OmegaConf.load(webui / "configs" / "v1-inference.yaml")
    cond = cfg.model.params.cond_stage_config
    assert cond.target == "ldm.modules.encoders.modules.FrozenCLIPEmbedder", cond.target
    cond.params = {"version": str(clip_dir)}
    model = tiny_families.randomize_(tiny_families.instantiate(cfg), seed)
    state = tiny_families.state_dict_of(model)
    del model
    (out / f"{CHECKPOINT_NAME}.yaml").write_text(OmegaConf.to_yaml(cfg), encoding="utf-8")
    return _save(state, out / f"{CHECKPOINT_NAME}.safetensors", METADATA)


def build_controlnet(path, seed: int = DEFAULT_SEED + 1) -> Path:
    """Write a full-width random SD 1.x ControlNet (ControlNet's default config, 3 hint channels,
    context 768) to ``path``; sd-webui-controlnet's scripts must be loaded (``scripts.cldm``)."""
    import copy

    import tiny_families

    guess = sys.modules["scripts.controlnet_model_guess"]
    cldm = sys.modules["scripts.cldm"]
    config = copy.deepcopy(guess.controlnet_default_config)
    config.update(hint_channels=3, use_fp16=False)
    model = tiny_families.randomize_(cldm.ControlNet(**config), seed)
    state = tiny_families.state_dict_of(model)
    del model
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _save(state, path, {"random_controlnet": METADATA["random_checkpoint"]})


# the SD 1.5 UNet's cross-attention widths in ControlNet's IP-Adapter layer order (its TransformerID
# list: input blocks, output blocks, then the middle block); layer i has the keys "{2i+1}.to_k_ip"
IP_ADAPTER_WIDTHS = [320, 320, 640, 640, 1280, 1280] + [1280] * 3 + [640] * 3 + [320] * 3 + [1280]
IP_ADAPTER_NAME = "ip-adapter-random"  # no "plus", "faceid", "v2"...: ControlNet reads the variant from the name
CLIP_VISION_FILE = "clip_h.pth"  # what ControlNet's ip-adapter_clip_sd15 preprocessor loads (or downloads)


def build_ip_adapter(path, seed: int = DEFAULT_SEED + 2, context: int = 768, clip: int = 1024, tokens: int = 4) -> Path:
    """Write a random plain IP-Adapter for SD 1.5 (image projection of a CLIP-H embedding to 4
    tokens, and the image key / value projection of every cross-attention layer) in the layout
    ControlNet loads from a safetensors file."""
    import torch

    import tiny_families

    def rand(name, *shape):
        g = tiny_families._generator(name, seed)
        return torch.randn(shape, generator=g) / (shape[-1] ** 0.5 if len(shape) > 1 else 10.0)
    state = {"image_proj.proj.weight": rand("proj.weight", tokens * context, clip),
             "image_proj.proj.bias": rand("proj.bias", tokens * context),
             "image_proj.norm.weight": 1.0 + rand("norm.weight", context),
             "image_proj.norm.bias": rand("norm.bias", context)}
    for i, width in enumerate(IP_ADAPTER_WIDTHS):
        for kind in ("to_k_ip", "to_v_ip"):
            state[f"ip_adapter.{2 * i + 1}.{kind}.weight"] = rand(f"{i}.{kind}", width, context)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _save({k: v.contiguous() for k, v in state.items()}, path, {"random_ip_adapter": METADATA["random_checkpoint"]})


def build_clip_vision_h(models_dir, seed: int = DEFAULT_SEED + 3) -> Path:
    """Write ``<models_dir>/clip_vision/clip_h.pth``: ControlNet's own CLIP ViT-H/14 vision config
    (632 M parameters) with seeded random weights (transformers' initialisation), and point ControlNet's preprocessors at
    ``models_dir`` (else they use a folder inside its checkout), so its IP-Adapter preprocessor
    finds the file and downloads nothing."""
    import importlib

    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    import tiny_families

    clipvision = importlib.import_module("annotator.clipvision")
    clipvision.models_path = str(models_dir)
    config = clipvision.configs["clip_h"]
    torch.manual_seed(seed)  # transformers' own seeded initialisation (normal weights, unit LayerNorms)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**config))
    path = Path(models_dir) / "clip_vision" / CLIP_VISION_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    # torch's legacy format: the WebUI's restricted unpickler refuses the newer zip entries
    torch.save(tiny_families.state_dict_of(model), tmp, _use_new_zipfile_serialization=False)
    os.replace(tmp, path)
    return path
