"""A tiny random T2I-Adapter for the tiny SD1 checkpoint, in sd-webui-controlnet's own layout.

ControlNet's ``Adapter`` (its ``scripts/adapter.py``) with the SD1 layout: 192 = 3 x 8 x 8 input
channels after the pixel unshuffle, channels 32, 64, 128, 128 (the first two match the tiny UNet's
channels after its input blocks 2 and 5, where ControlNet adds them), two residual blocks per
stage, 1x1 kernels; every weight seeded random, one metadata key. ControlNet rebuilds it from the
state dict's shapes when the file is in ``models/ControlNet``. Nothing is downloaded.

    python tests/webui/tiny_t2i_adapter.py OUT.safetensors /path/to/sd-webui-controlnet [--seed N]

(with the WebUI's python, from the WebUI's folder: the adapter module imports ``modules.devices``)
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
from pathlib import Path


def write_adapter(path, cn_dir=None, seed: int = 8) -> Path:
    """Write the adapter to ``path``; ``cn_dir``: the ControlNet checkout (not needed once the WebUI
    has loaded ControlNet's scripts)."""
    import torch
    from safetensors.torch import save_file

    module = sys.modules.get("scripts.adapter")
    if module is None:  # the WebUI's folder for ``modules``, then ControlNet's for ``scripts``
        sys.path.insert(0, os.environ.get("MOD_WEBUI_DIR") or os.getcwd())
        sys.path.insert(0, str(Path(cn_dir).resolve()))
        argv, sys.argv = sys.argv, sys.argv[:1]  # the WebUI parses its flags when ``modules`` is imported
        try:
            module = importlib.import_module("scripts.adapter")
        finally:
            sys.argv = argv
    torch.manual_seed(7)
    model = module.Adapter(cin=192, channels=[32, 64, 128, 128], nums_rb=2, ksize=1, sk=True, use_conv=False,
                           is_sdxl=False)
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(v.shape, generator=g) * (0.5 / math.sqrt(max(1, v[0].numel()))) if v.ndim > 1
             else torch.randn(v.shape, generator=g) * 0.1 for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"tiny": "t2i adapter"})
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("controlnet_dir")
    ap.add_argument("--seed", type=int, default=8)
    args = ap.parse_args(argv)
    print(write_adapter(args.out, args.controlnet_dir, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
