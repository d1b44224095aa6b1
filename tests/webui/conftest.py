"""Fixtures shared by the real-WebUI tests: the tiny checkpoint (built once per session) and,
for the in-process tests, the booted host, the extension's script, the tiny SDXL / refiner /
SD 2.x checkpoints (``family_ckpts``) and a switch to them (``load_family``)."""

from __future__ import annotations

import importlib
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


@pytest.fixture(scope="session")
def family_ckpts(host, tmp_path_factory) -> dict:
    """``{"sdxl" | "sdxl-refiner" | "sd2-v": Path}``: the tiny checkpoints of `tiny_families`,
    built once per session into a temporary folder, in this process after the boot (so with the
    WebUI's own sgm and ldm; about 1 s each)."""
    try:
        for module in ("sgm", "ldm", "tiny_families"):
            importlib.import_module(module)
    except ImportError as e:
        pytest.skip(f"building the tiny SDXL / SD 2.x checkpoints needs {e.name or e} (the WebUI's repositories)")
    import tiny_families

    out = tmp_path_factory.mktemp("families")
    return {family: tiny_families.build(out, family) for family in tiny_families.FAMILIES}


@pytest.fixture(scope="module")
def restore_boot_checkpoint(host):
    """Module scope: when the module's tests are done, the checkpoint the host booted with (the
    tiny SD1 one) is loaded again, so later modules find the model they expect."""
    import inprocess

    yield inprocess.boot_checkpoint()
    inprocess.load_checkpoint(inprocess.boot_checkpoint())


@pytest.fixture
def load_family(family_ckpts, restore_boot_checkpoint):
    """``load_family(family) -> shared.sd_model``: switch the booted WebUI to that tiny checkpoint
    (no-op when it is loaded; SDXL gets its vaeapprox file). It stays loaded for the following
    tests of the module, so order tests by family; the module's end loads the SD1 one again."""
    import inprocess

    def load(family: str):
        return inprocess.load_checkpoint(family_ckpts[family])
    return load
