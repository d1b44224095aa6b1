"""Build a tiny, random-weight SD1.x-layout checkpoint that an A1111 WebUI can load.

Everything here is generated locally; nothing is downloaded.  The output folder gets:

* ``tiny-sd15.safetensors``: all weights (UNet, VAE, CLIP text encoder, noise schedule),
  seeded and deterministic; one metadata key only, so the file hash is stable.
* ``tiny-sd15.yaml``: the ldm config the WebUI picks up because it sits beside the
  checkpoint with the same base name.
* ``tiny-clip-text/``: ``config.json`` for a small CLIP text model plus the tokenizer files
  (``vocab.json``, ``merges.txt``) built from the real CLIP BPE list that open_clip / clip ship.

The tensor layout is enumerated here from the published architecture description
(openai-style UNet with spatial transformers, KL autoencoder, HF CLIP text model), so the
builder needs only torch and safetensors at run time, plus the gzipped BPE list.

Usage::

    python tests/webui/tiny_checkpoint.py OUT_DIR [--seed N]
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import math
import os
import zlib
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch

CHECKPOINT_NAME = "tiny-sd15"
CLIP_DIR_NAME = "tiny-clip-text"
METADATA = {"tiny_checkpoint": "sd-webui-mixture-of-diffusers random test model v1"}
DEFAULT_SEED = 1234

# ---- architecture ---------------------------------------------------------------------
UNET = dict(
    in_channels=4,
    out_channels=4,
    model_channels=32,
    channel_mult=[1, 2, 2],
    num_res_blocks=1,
    attention_resolutions=[4],
    num_head_channels=16,
    transformer_depth=1,
    context_dim=64,
)
VAE = dict(
    ch=32,
    ch_mult=[1, 1, 2, 2],
    num_res_blocks=1,
    z_channels=4,
    embed_dim=4,
    in_channels=3,
    out_ch=3,
)
CLIP_TEXT = dict(
    vocab_size=49408,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    max_position_embeddings=77,
    projection_dim=64,
)
SCHEDULE = dict(timesteps=1000, linear_start=0.00085, linear_end=0.0120)
SCALE_FACTOR = 0.18215
# Layers that ldm initialises to zero get random weights at this fraction of the fan-in scale.
ZERO_INIT_GAIN = 1.0

# ---- tensor specs ---------------------------------------------------------------------
# kind: "w" weight (fan-in scaled), "b" bias, "nw"/"nb" norm weight/bias, "emb" embedding,
# "zw" a layer ldm initialises to zero (gets small random values here).
Spec = Tuple[str, Tuple[int, ...], str]


class _Specs:
    def __init__(self) -> None:
        self.items: List[Spec] = []

    def conv(self, name: str, cin: int, cout: int, k: int, zero: bool = False) -> None:
        self.items.append((name + ".weight", (cout, cin, k, k), "zw" if zero else "w"))
        self.items.append((name + ".bias", (cout,), "b"))

    def linear(self, name: str, fin: int, fout: int, bias: bool = True, zero: bool = False) -> None:
        self.items.append((name + ".weight", (fout, fin), "zw" if zero else "w"))
        if bias:
            self.items.append((name + ".bias", (fout,), "b"))

    def norm(self, name: str, c: int) -> None:
        self.items.append((name + ".weight", (c,), "nw"))
        self.items.append((name + ".bias", (c,), "nb"))


def _unet_resblock(s: _Specs, p: str, cin: int, cout: int, temb: int) -> None:
    s.norm(p + ".in_layers.0", cin)
    s.conv(p + ".in_layers.2", cin, cout, 3)
    s.linear(p + ".emb_layers.1", temb, cout)
    s.norm(p + ".out_layers.0", cout)
    s.conv(p + ".out_layers.3", cout, cout, 3, zero=True)
    if cin != cout:
        s.conv(p + ".skip_connection", cin, cout, 1)


def _unet_transformer(s: _Specs, p: str, c: int, ctx: int) -> None:
    # heads * head_dim == c when num_head_channels divides c
    s.norm(p + ".norm", c)
    s.conv(p + ".proj_in", c, c, 1)
    b = p + ".transformer_blocks.0"
    for attn, kv_in in (("attn1", c), ("attn2", ctx)):
        s.linear(f"{b}.{attn}.to_q", c, c, bias=False)
        s.linear(f"{b}.{attn}.to_k", kv_in, c, bias=False)
        s.linear(f"{b}.{attn}.to_v", kv_in, c, bias=False)
        s.linear(f"{b}.{attn}.to_out.0", c, c)
    s.linear(b + ".ff.net.0.proj", c, c * 8)  # GEGLU: 2 * (4 * c)
    s.linear(b + ".ff.net.2", c * 4, c)
    for n in ("norm1", "norm2", "norm3"):
        s.norm(f"{b}.{n}", c)
    s.conv(p + ".proj_out", c, c, 1, zero=True)


def unet_specs(prefix: str = "model.diffusion_model.") -> List[Spec]:
    cfg = UNET
    mc = cfg["model_channels"]
    temb = mc * 4
    ctx = cfg["context_dim"]
    s = _Specs()
    s.linear(prefix + "time_embed.0", mc, temb)
    s.linear(prefix + "time_embed.2", temb, temb)
    s.conv(prefix + "input_blocks.0.0", cfg["in_channels"], mc, 3)
    skip_chans = [mc]
    ch, ds, idx = mc, 1, 1
    mults = cfg["channel_mult"]
    for level, mult in enumerate(mults):
        for _ in range(cfg["num_res_blocks"]):
            p = f"{prefix}input_blocks.{idx}"
            _unet_resblock(s, p + ".0", ch, mult * mc, temb)
            ch = mult * mc
            if ds in cfg["attention_resolutions"]:
                _unet_transformer(s, p + ".1", ch, ctx)
            skip_chans.append(ch)
            idx += 1
        if level != len(mults) - 1:
            s.conv(f"{prefix}input_blocks.{idx}.0.op", ch, ch, 3)
            skip_chans.append(ch)
            ds *= 2
            idx += 1
    _unet_resblock(s, prefix + "middle_block.0", ch, ch, temb)
    _unet_transformer(s, prefix + "middle_block.1", ch, ctx)
    _unet_resblock(s, prefix + "middle_block.2", ch, ch, temb)
    idx = 0
    for level, mult in list(enumerate(mults))[::-1]:
        for i in range(cfg["num_res_blocks"] + 1):
            p = f"{prefix}output_blocks.{idx}"
            _unet_resblock(s, p + ".0", ch + skip_chans.pop(), mc * mult, temb)
            ch = mc * mult
            sub = 1
            if ds in cfg["attention_resolutions"]:
                _unet_transformer(s, f"{p}.{sub}", ch, ctx)
                sub += 1
            if level and i == cfg["num_res_blocks"]:
                s.conv(f"{p}.{sub}.conv", ch, ch, 3)
                ds //= 2
            idx += 1
    s.norm(prefix + "out.0", ch)
    s.conv(prefix + "out.2", mc, cfg["out_channels"], 3, zero=True)
    return s.items


def _vae_resblock(s: _Specs, p: str, cin: int, cout: int) -> None:
    s.norm(p + ".norm1", cin)
    s.conv(p + ".conv1", cin, cout, 3)
    s.norm(p + ".norm2", cout)
    s.conv(p + ".conv2", cout, cout, 3)
    if cin != cout:
        s.conv(p + ".nin_shortcut", cin, cout, 1)


def _vae_attn(s: _Specs, p: str, c: int) -> None:
    s.norm(p + ".norm", c)
    for n in ("q", "k", "v", "proj_out"):
        s.conv(f"{p}.{n}", c, c, 1)


def vae_specs(prefix: str = "first_stage_model.") -> List[Spec]:
    cfg = VAE
    ch, mults, nrb, z = cfg["ch"], cfg["ch_mult"], cfg["num_res_blocks"], cfg["z_channels"]
    s = _Specs()
    e = prefix + "encoder."
    s.conv(e + "conv_in", cfg["in_channels"], ch, 3)
    block_in = ch
    for i, mult in enumerate(mults):
        block_in = ch * ([1] + list(mults))[i]
        block_out = ch * mult
        for j in range(nrb):
            _vae_resblock(s, f"{e}down.{i}.block.{j}", block_in, block_out)
            block_in = block_out
        if i != len(mults) - 1:
            s.conv(f"{e}down.{i}.downsample.conv", block_in, block_in, 3)
    _vae_resblock(s, e + "mid.block_1", block_in, block_in)
    _vae_attn(s, e + "mid.attn_1", block_in)
    _vae_resblock(s, e + "mid.block_2", block_in, block_in)
    s.norm(e + "norm_out", block_in)
    s.conv(e + "conv_out", block_in, 2 * z, 3)

    d = prefix + "decoder."
    block_in = ch * mults[-1]
    s.conv(d + "conv_in", z, block_in, 3)
    _vae_resblock(s, d + "mid.block_1", block_in, block_in)
    _vae_attn(s, d + "mid.attn_1", block_in)
    _vae_resblock(s, d + "mid.block_2", block_in, block_in)
    for i in reversed(range(len(mults))):
        block_out = ch * mults[i]
        for j in range(nrb + 1):
            _vae_resblock(s, f"{d}up.{i}.block.{j}", block_in, block_out)
            block_in = block_out
        if i != 0:
            s.conv(f"{d}up.{i}.upsample.conv", block_in, block_in, 3)
    s.norm(d + "norm_out", block_in)
    s.conv(d + "conv_out", block_in, cfg["out_ch"], 3)

    s.conv(prefix + "quant_conv", 2 * z, 2 * cfg["embed_dim"], 1)
    s.conv(prefix + "post_quant_conv", cfg["embed_dim"], z, 1)
    return s.items


def clip_text_specs(prefix: str = "cond_stage_model.transformer.") -> List[Spec]:
    cfg = CLIP_TEXT
    h, inter = cfg["hidden_size"], cfg["intermediate_size"]
    t = prefix + "text_model."
    s = _Specs()
    s.items.append((t + "embeddings.token_embedding.weight", (cfg["vocab_size"], h), "emb"))
    s.items.append((t + "embeddings.position_embedding.weight", (cfg["max_position_embeddings"], h), "emb"))
    for i in range(cfg["num_hidden_layers"]):
        p = f"{t}encoder.layers.{i}"
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            s.linear(f"{p}.self_attn.{n}", h, h)
        s.norm(p + ".layer_norm1", h)
        s.linear(p + ".mlp.fc1", h, inter)
        s.linear(p + ".mlp.fc2", inter, h)
        s.norm(p + ".layer_norm2", h)
    s.norm(t + "final_layer_norm", h)
    return s.items


# ---- value generation -----------------------------------------------------------------

def _random_tensor(name: str, shape: Sequence[int], kind: str, seed: int) -> torch.Tensor:
    gen = torch.Generator(device="cpu")
    gen.manual_seed((seed * 1_000_003 + zlib.crc32(name.encode("utf-8"))) % (2**63))
    x = torch.randn(tuple(shape), generator=gen, dtype=torch.float32)
    if kind in ("w", "zw"):
        fan_in = int(math.prod(shape[1:])) if len(shape) > 1 else int(shape[0])
        std = 1.0 / math.sqrt(max(fan_in, 1))
        if kind == "zw":
            std *= ZERO_INIT_GAIN  # ldm zero-initialises these; non-zero keeps the prompt effect
        return x * std
    if kind == "b":
        return x * 0.02
    if kind == "nw":
        return 1.0 + x * 0.05
    if kind == "nb":
        return x * 0.02
    if kind == "emb":
        return x * 0.02
    raise ValueError(kind)


def schedule_buffers(prefix: str = "") -> Dict[str, torch.Tensor]:
    """The scaled-linear DDPM schedule buffers that SD1.x checkpoints carry (float32)."""
    n = SCHEDULE["timesteps"]
    betas = torch.linspace(SCHEDULE["linear_start"] ** 0.5, SCHEDULE["linear_end"] ** 0.5, n,
                           dtype=torch.float64) ** 2
    alphas = 1.0 - betas
    ac = torch.cumprod(alphas, dim=0)
    ac_prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)  # v_posterior = 0
    out = {
        "betas": betas,
        "alphas_cumprod": ac,
        "alphas_cumprod_prev": ac_prev,
        "sqrt_alphas_cumprod": ac.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - ac).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - ac).log(),
        "sqrt_recip_alphas_cumprod": (1.0 / ac).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / ac - 1.0).sqrt(),
        "posterior_variance": post_var,
        "posterior_log_variance_clipped": post_var.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * ac_prev.sqrt() / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * alphas.sqrt() / (1.0 - ac),
    }
    return {prefix + k: v.to(torch.float32).contiguous() for k, v in out.items()}


def all_specs() -> List[Spec]:
    return unet_specs() + vae_specs() + clip_text_specs()


def build_state_dict(seed: int = DEFAULT_SEED) -> Dict[str, torch.Tensor]:
    sd: Dict[str, torch.Tensor] = {}
    for name, shape, kind in all_specs():
        if name in sd:
            raise AssertionError(f"duplicate tensor name {name}")
        sd[name] = _random_tensor(name, shape, kind, seed).contiguous()
    n_pos = CLIP_TEXT["max_position_embeddings"]
    sd["cond_stage_model.transformer.text_model.embeddings.position_ids"] = (
        torch.arange(n_pos, dtype=torch.int64).unsqueeze(0).contiguous())
    sd.update(schedule_buffers())
    return sd


# ---- tokenizer files ------------------------------------------------------------------

def _byte_symbols() -> List[str]:
    """The 256 printable stand-ins that byte-level BPE uses for raw bytes, in CLIP's vocab order.

    Printable Latin-1 bytes map to themselves and come first (in byte order); the remaining
    bytes map to code points from 256 upwards and follow, also in byte order.
    """
    direct = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1))
              + list(range(ord("\u00ae"), ord("\u00ff") + 1)))
    remapped = [b for b in range(256) if b not in direct]
    return [chr(b) for b in direct] + [chr(256 + n) for n in range(len(remapped))]


def find_bpe_file() -> Path:
    """Locate ``bpe_simple_vocab_16e6.txt.gz`` shipped by open_clip or clip (no import needed)."""
    env = os.environ.get("MOD_CLIP_BPE")
    if env:
        return Path(env)
    for mod in ("open_clip", "clip"):
        try:
            spec = importlib.util.find_spec(mod)
        except (ImportError, ValueError):
            spec = None
        if spec and spec.submodule_search_locations:
            for loc in spec.submodule_search_locations:
                cand = Path(loc) / "bpe_simple_vocab_16e6.txt.gz"
                if cand.is_file():
                    return cand
    raise FileNotFoundError(
        "bpe_simple_vocab_16e6.txt.gz not found: install open-clip-torch or clip-anytorch, "
        "or set MOD_CLIP_BPE to its path")


def write_tokenizer_files(folder: Path, bpe_path: Optional[Path] = None) -> None:
    bpe_path = Path(bpe_path) if bpe_path else find_bpe_file()
    with gzip.open(bpe_path, "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    n_merges = CLIP_TEXT["vocab_size"] - 256 * 2 - 2
    merges = [tuple(line.split()) for line in lines[1:1 + n_merges]]
    if len(merges) != n_merges or any(len(m) != 2 for m in merges):
        raise ValueError(f"unexpected BPE list in {bpe_path}")
    tokens = _byte_symbols()
    tokens = tokens + [t + "</w>" for t in tokens]
    tokens += ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    if len(tokens) != CLIP_TEXT["vocab_size"]:
        raise AssertionError(len(tokens))
    vocab = {t: i for i, t in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    with open(folder / "merges.txt", "w", encoding="utf-8", newline="\n") as fh:
        fh.write("#version: 0.2\n")
        for a, b in merges:
            fh.write(f"{a} {b}\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
               "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    tok_cfg = dict(special, model_max_length=CLIP_TEXT["max_position_embeddings"],
                   do_lower_case=True, errors="replace", add_prefix_space=False,
                   tokenizer_class="CLIPTokenizer")
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2) + "\n")


def write_clip_config(folder: Path, arch: Optional[dict] = None) -> None:
    """``config.json`` of a CLIP text model: ``arch`` (the HF config fields), by default this
    module's tiny one."""
    cfg = dict(
        architectures=["CLIPTextModel"],
        model_type="clip_text_model",
        attention_dropout=0.0,
        dropout=0.0,
        hidden_act="quick_gelu",
        initializer_factor=1.0,
        initializer_range=0.02,
        layer_norm_eps=1e-05,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=1,
        torch_dtype="float32",
        **(arch or CLIP_TEXT),
    )
    (folder / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


# ---- yaml -----------------------------------------------------------------------------

def _yaml_scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return repr(v)
    if isinstance(v, float):
        text = repr(v)
        mant, sep, exp = text.partition("e")
        if sep and "." not in mant:  # YAML 1.1 floats need a dot: 1e-05 -> 1.0e-05
            text = f"{mant}.0e{exp}"
        return text
    if isinstance(v, str):
        return json.dumps(v)
    raise TypeError(type(v))


def _yaml_lines(obj, indent: int = 0) -> Iterable[str]:
    pad = "  " * indent
    for key, val in obj.items():
        if isinstance(val, dict):
            yield f"{pad}{key}:"
            yield from _yaml_lines(val, indent + 1)
        elif isinstance(val, list):
            yield f"{pad}{key}: [{', '.join(_yaml_scalar(x) for x in val)}]"
        else:
            yield f"{pad}{key}: {_yaml_scalar(val)}"


def model_config(clip_dir: Path) -> dict:
    u, v = UNET, VAE
    return {"model": {
        "base_learning_rate": 1.0e-04,
        "target": "ldm.models.diffusion.ddpm.LatentDiffusion",
        "params": {
            "linear_start": SCHEDULE["linear_start"],
            "linear_end": SCHEDULE["linear_end"],
            "num_timesteps_cond": 1,
            "log_every_t": 200,
            "timesteps": SCHEDULE["timesteps"],
            "first_stage_key": "jpg",
            "cond_stage_key": "txt",
            "image_size": 64,
            "channels": 4,
            "cond_stage_trainable": False,
            "conditioning_key": "crossattn",
            "monitor": "val/loss_simple_ema",
            "scale_factor": SCALE_FACTOR,
            "use_ema": False,
            "unet_config": {
                "target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
                "params": {
                    "image_size": 32,
                    "in_channels": u["in_channels"],
                    "out_channels": u["out_channels"],
                    "model_channels": u["model_channels"],
                    "attention_resolutions": u["attention_resolutions"],
                    "num_res_blocks": u["num_res_blocks"],
                    "channel_mult": u["channel_mult"],
                    "num_head_channels": u["num_head_channels"],
                    "use_spatial_transformer": True,
                    "transformer_depth": u["transformer_depth"],
                    "context_dim": u["context_dim"],
                    "use_checkpoint": False,
                    "legacy": False,
                },
            },
            "first_stage_config": {
                "target": "ldm.models.autoencoder.AutoencoderKL",
                "params": {
                    "embed_dim": v["embed_dim"],
                    "monitor": "val/rec_loss",
                    "ddconfig": {
                        "double_z": True,
                        "z_channels": v["z_channels"],
                        "resolution": 256,
                        "in_channels": v["in_channels"],
                        "out_ch": v["out_ch"],
                        "ch": v["ch"],
                        "ch_mult": v["ch_mult"],
                        "num_res_blocks": v["num_res_blocks"],
                        "attn_resolutions": [],
                        "dropout": 0.0,
                    },
                    "lossconfig": {"target": "torch.nn.Identity"},
                },
            },
            "cond_stage_config": {
                "target": "ldm.modules.encoders.modules.FrozenCLIPEmbedder",
                "params": {"version": str(clip_dir)},
            },
        },
    }}


def write_yaml(path: Path, clip_dir: Path) -> None:
    text = "\n".join(_yaml_lines(model_config(clip_dir))) + "\n"
    path.write_text(text, encoding="utf-8")


# ---- entry points ---------------------------------------------------------------------

def build_tiny_checkpoint(out_dir, seed: int = DEFAULT_SEED, bpe_path=None,
                          name: str = CHECKPOINT_NAME) -> Path:
    """Write the tiny model into ``out_dir``; return the path of the ``.safetensors`` file."""
    from safetensors.torch import save_file

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    clip_dir = out / CLIP_DIR_NAME
    clip_dir.mkdir(exist_ok=True)
    write_clip_config(clip_dir)
    write_tokenizer_files(clip_dir, bpe_path)
    write_yaml(out / f"{name}.yaml", clip_dir)
    ckpt = out / f"{name}.safetensors"
    tmp = ckpt.with_suffix(".safetensors.tmp")
    save_file(build_state_dict(seed), str(tmp), metadata=dict(METADATA))
    os.replace(tmp, ckpt)
    return ckpt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--bpe", default=None, help="path of bpe_simple_vocab_16e6.txt.gz")
    args = ap.parse_args(argv)
    print(build_tiny_checkpoint(args.out_dir, seed=args.seed, bpe_path=args.bpe))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
