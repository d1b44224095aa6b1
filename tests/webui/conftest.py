"""Fixtures shared by the real-WebUI tests: the tiny checkpoint (built once per session) and,
for the in-process tests, the booted host and the extension's script."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
for path in (HERE, ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    """``MOD_TINY_CKPT``, or a tiny random SD1.x checkpoint built by `tiny_checkpoint`."""
    import launcher

    try:
        return launcher.tiny_checkpoint(tmp_path_factory.mktemp("tiny"))
    except ImportError as e:  # torch or safetensors missing in this interpreter
        pytest.skip(f"building the tiny checkpoint needs {e.name}")


@pytest.fixture(scope="session")
def host(tiny_ckpt):
    """The WebUI booted in this process (``modules.shared``), once per session."""
    import inprocess

    return inprocess.boot(tiny_ckpt)


@pytest.fixture(scope="session")
def script(host):
    """The extension's script object, loaded from ``scripts/`` as the WebUI would."""
    spec = importlib.util.spec_from_file_location("mod_script_under_test", ROOT / "scripts" / "mixture_of_diffusers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MixtureOfDiffusersScript()
