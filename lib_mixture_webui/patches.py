"""Every host attribute the extension replaces, listed as data, and one way to wrap and restore.

`REGISTRY` names each patch: the object and attribute, its scope and why. Class-level
patches (``scope="class"``) are installed once per process by `install` and given back
by `uninstall`; their wrappers are inert unless a job context is active. Per-job patches
(``scope="job"``, on ``p`` and its objects) are applied through the job's `JobPatches` and
restored when the job ends, finished, failed or interrupted; per-call ones (``scope="call"``)
are restored on leaving the host call they wrap (`swapped`).

The installed set is reached from the host (the marker on a wrapper in place), not from a
module global, so a re-imported module finds it and never wraps twice. This module imports
nothing from the host at import time: tests use it with stand-ins.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from .lru import EqualityLRU

MARK = "_mod_patch"  # on every wrapper of ours: who applied it (an `Installation` or a `JobPatches`)
CLASS, JOB, CALL = "class", "job", "call"


@dataclass(frozen=True)
class Patch:
    """One host attribute the extension replaces.

    ``owner`` is a dotted import path (``module`` or ``module.Class``) or, for per-job
    patches, a path from the processing object (``p``, ``p.rng``). ``make`` is
    ``"module:function"``, called as ``function(original, installation)`` for class-level
    patches.
    """

    owner: str
    attribute: str
    scope: str
    where: str  # the module that applies it
    why: str
    make: str = ""


REGISTRY: tuple[Patch, ...] = (
    Patch("modules.sd_samplers_cfg_denoiser.CFGDenoiser", "forward", CLASS, "lib_mixture_webui.hook",
          "every sampler of every pass calls it: the mixture runs there while a job is active",
          "lib_mixture_webui.hook:wrap_forward"),
    # the VAE classes of SD1.x/2.x (ldm) and SDXL (sgm): img2img source, hires fix, final images, full previews
    *(Patch(f"{package}.modules.diffusionmodules.model.{coder}", "forward", CLASS, "lib_mixture_webui.vae",
            f"tiled VAE {coder.lower()[:-1]} ({family})", f"lib_mixture_webui.vae:wrap_{coder.lower()}")
      for package, family in (("ldm", "SD1.x/2.x"), ("sgm", "SDXL")) for coder in ("Encoder", "Decoder")),
    Patch("modules.sd_vae_taesd", "decoder_model", CLASS, "lib_mixture_webui.vae",
          "TAESD decode, when chosen, runs tiled", "lib_mixture_webui.vae:wrap_taesd_decoder"),
    Patch("modules.sd_vae_taesd", "encoder_model", CLASS, "lib_mixture_webui.vae",
          "TAESD encode, when chosen, runs tiled", "lib_mixture_webui.vae:wrap_taesd_encoder"),
    Patch("p", "close", JOB, "lib_mixture_webui.context",
          "the WebUI calls it even when the job fails: the job context ends there"),
    Patch("p.rng", "next", JOB, "lib_mixture_webui.noise",
          "seeded regions get their own initial noise in their box"),
    Patch("modules.sd_samplers_common", "store_latent", CALL, "lib_mixture_webui.hook",
          "per-crop live previews are recorded, then one full-size preview is shown per step"),
    # Set by the engine's per-batch path (`lib_mixture.denoiser_hook.mixture_forward`) around each
    # host call of a step and put back, full-size, when the step's call ends (also on interrupt).
    *(Patch("den", name, CALL, "lib_mixture_webui.hook", "regions: each crop batch sees its crop of the inpainting "
            "mask and init latent", "") for name in ("mask", "nmask", "init_latent")),
    Patch("den", "step", CALL, "lib_mixture_webui.hook", "every crop batch of a step sees the step's index; "
          "it advances by one per canvas call"),
    Patch("den.sampler", "last_latent", CALL, "lib_mixture_webui.hook", "full-size again after each canvas call "
          "(an interrupt returns it as the image)"),
    *(Patch("hypertile layer params", name, CALL, "lib_mixture_webui.hook", "Hypertile splits attention by the "
            "canvas's aspect ratio; each crop batch gets its own") for name in ("aspect_ratio", "tile_size")),
    Patch("modules.shared.sd_model", "apply_model", CALL, "lib_mixture_webui.hook",
          "a tile grid without regions: the model call under the sampler's wrapper is split into crop "
          "batches, once per step (instance attribute, removed again after the call)"),
)


def resolve(path: str, p: Any = None) -> Any:
    """The object a `Patch.owner` names; ``p``-relative paths need ``p``. ImportError or
    AttributeError when the host has no such object (e.g. no ``sgm``)."""
    parts = path.split(".")
    if parts[0] == "p":
        obj = p
        for name in parts[1:]:
            obj = getattr(obj, name)
        return obj
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            if cut == 1:
                raise
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(path)


def is_ours(value: Any) -> bool:
    """Whether ``value`` is one of the extension's wrappers."""
    return getattr(value, MARK, None) is not None


@dataclass
class Applied:
    """One wrapper in place: restoring puts ``original`` back, or removes the attribute when the
    owner did not hold its own (an instance using its class's method)."""

    owner: Any
    attribute: str
    wrapper: Any
    original: Any
    had_own: bool

    def restore(self) -> bool:
        """Give the attribute back; False when something else replaced our wrapper since."""
        if vars(self.owner).get(self.attribute) is not self.wrapper:
            return False
        if self.had_own:
            setattr(self.owner, self.attribute, self.original)
        else:
            delattr(self.owner, self.attribute)
        return True


def wrap(owner: Any, attribute: str, make: Callable[[Any], Any], by: Any) -> Applied | None:
    """Replace ``owner.attribute`` with ``make(original)`` marked as applied ``by``; None (and
    nothing done) when one of our wrappers is already there."""
    original = getattr(owner, attribute)
    if is_ours(original):
        return None
    wrapper = make(original)
    setattr(wrapper, MARK, by)
    applied = Applied(owner, attribute, wrapper, original, attribute in vars(owner))
    setattr(owner, attribute, wrapper)
    return applied


@contextlib.contextmanager
def swapped(owner: Any, attribute: str, replacement: Any) -> Iterator[None]:
    """``owner.attribute`` is ``replacement`` inside the block (a per-call patch), the host's again after."""
    real = getattr(owner, attribute)
    setattr(owner, attribute, replacement)
    try:
        yield
    finally:
        setattr(owner, attribute, real)


@dataclass
class JobPatches:
    """The per-job wrappers of one job; `restore` gives every one back (idempotent)."""

    applied: list[Applied] = field(default_factory=list)

    def wrap(self, owner: Any, attribute: str, make: Callable[[Any], Any]) -> bool:
        applied = wrap(owner, attribute, make, self)
        if applied is not None:
            self.applied.append(applied)
        return applied is not None

    def restore(self) -> None:
        while self.applied:
            self.applied.pop().restore()


class Installation:
    """The class-level patches of this process and what their wrappers share.

    ``current`` is the job context whose settings the VAE wrappers follow (the host's VAE
    classes have no ``p``); ``conds`` the region conditionings cache, bounded (32 entries)
    and kept across jobs like the host's own cond cache; ``last_vae_log`` what the last
    finished job tiled. All of it lives as long as the patches and goes with `uninstall`.
    """

    def __init__(self):
        self.applied: list[Applied] = []
        self.current: Any = None
        self.conds = EqualityLRU(32)
        self.last_vae_log: list[dict] = []

    def vae_route(self) -> Any:
        """The running job's tiled VAE route, or None."""
        current = self.current
        return None if current is None else current.vae_route

    def end_current(self) -> None:
        """End whatever job is still current: a new job starts from the host's plain VAE."""
        if self.current is not None:
            self.current.end()
        self.current = None
        self.last_vae_log = []


def held() -> dict[tuple[str, str], Any]:
    """What the owner of each class-level patch this host has holds now (its own attribute or
    our wrapper), by ``(owner, attribute)``."""
    found = {}
    for patch in REGISTRY:
        if patch.scope == CLASS:
            try:
                found[(patch.owner, patch.attribute)] = vars(resolve(patch.owner))[patch.attribute]
            except (ImportError, AttributeError, KeyError):
                continue
    return found


def installed() -> Installation | None:
    """The installed patches, found through the host's patched attributes."""
    for value in held().values():
        by = getattr(value, MARK, None)
        if isinstance(by, Installation):
            return by
    return None


def install() -> Installation:
    """Install every class-level patch the host has (once; later calls return the same set)."""
    found = installed()
    if found is not None:
        return found
    installation = Installation()
    for patch in REGISTRY:
        if patch.scope != CLASS:
            continue
        try:
            owner = resolve(patch.owner)
        except (ImportError, AttributeError):
            continue  # e.g. a host without sgm
        module, name = patch.make.split(":")
        make = getattr(importlib.import_module(module), name)
        applied = wrap(owner, patch.attribute, lambda original, make=make: make(original, installation), installation)
        if applied is not None:
            installation.applied.append(applied)
    return installation


def uninstall() -> list[str]:
    """Give every class-level attribute back to the host and end the running job context.
    Returns the patches that could not be restored (something else wrapped over them)."""
    installation = installed()
    if installation is None:
        return []
    installation.end_current()
    left = []
    while installation.applied:
        applied = installation.applied.pop()
        if not applied.restore():
            left.append(f"{getattr(applied.owner, '__name__', applied.owner)}.{applied.attribute}")
    return left
