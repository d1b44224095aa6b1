"""Region prompts to conditionings, with the WebUI's own prompt parser and cache rules."""

from __future__ import annotations

from typing import Any

from modules import devices, extra_networks, prompt_parser, shared

from lib_mixture.preset import Region

from .lru import EqualityLRU


def region_prompts(p: Any, region: Region, hires: bool) -> tuple[list[str], list[str], list[str]]:
    """The per-image prompts and negative prompts of a region, and warnings.

    Replace mode: the region's own text with the job's styles applied once (empty text keeps
    the main prompt). Append mode: the main prompt (already styled) then the region's text.
    ``<lora:...>`` tags are removed: LoRA weights patch the whole model for the whole job.
    """
    warnings = []
    base = list(p.hr_prompts if hires else p.prompts)
    base_neg = list(p.hr_negative_prompts if hires else p.negative_prompts)
    text, found = _strip_extra_networks(region.prompt)
    neg, found_neg = _strip_extra_networks(region.negative_prompt)
    if found or found_neg:
        warnings.append(f"removed {', '.join(sorted(found | found_neg))} from a region prompt: extra networks "
                        "(LoRA) apply to the whole image; put them in the main prompt")
    styles = getattr(p, "styles", None) or []
    if region.prompt_mode == "append":
        prompts = [f"{b}, {text}" if text else b for b in base]
        negatives = [f"{b}, {neg}" if neg else b for b in base_neg]
    else:
        prompts = [shared.prompt_styles.apply_styles_to_prompt(text, styles)] * len(base) if text else base
        negatives = ([shared.prompt_styles.apply_negative_styles_to_prompt(neg, styles)] * len(base_neg)
                     if neg else base_neg)
    return prompts, negatives, warnings


def _strip_extra_networks(text: str) -> tuple[str, set[str]]:
    cleaned, data = extra_networks.parse_prompt(text)
    found = {f"<{name}:{':'.join(params.items)}>" for name, items in data.items() for params in items}
    return cleaned.strip().strip(",").strip(), found


def encode(p: Any, prompts: list[str], negatives: list[str], width: int, height: int, steps: int,
           hires_steps: int | None, cache: EqualityLRU) -> tuple[Any, Any]:
    """``(cond, uncond)`` as the sampler passes them to ``CFGDenoiser.forward``.

    Kept in ``cache`` (the installation's, across jobs) under the host's own cache key
    (`p.cached_params`, which includes the checkpoint), so an unchanged region prompt is
    encoded once, like the main prompt.
    """
    use_old = shared.opts.use_old_scheduling
    c_in = prompt_parser.SdConditioning(prompts, width=width, height=height)
    u_in = prompt_parser.SdConditioning(negatives, width=width, height=height, is_negative_prompt=True)
    # width and height too: SDXL's vector depends on them, and the host's key has only p's size
    key = (p.cached_params(c_in, steps, p.extra_network_data, hires_steps, use_old),
           p.cached_params(u_in, steps, p.extra_network_data, hires_steps, use_old), width, height)
    found = cache.get(key)
    if found is not None:
        return found
    with devices.autocast():
        cond = prompt_parser.get_multicond_learned_conditioning(shared.sd_model, c_in, steps, hires_steps, use_old)
        uncond = prompt_parser.get_learned_conditioning(shared.sd_model, u_in, steps, hires_steps, use_old)
    cache.put(key, (cond, uncond))
    return cond, uncond


def join(conds: list, unconds: list) -> tuple[Any, Any]:
    """One batch's conditioning from per-crop ones, crop-major, as `reconstruct_*` expects."""
    if len(conds) == 1:
        return conds[0], unconds[0]
    batch = [row for c in conds for row in c.batch]
    return prompt_parser.MulticondLearnedConditioning(shape=(len(batch),), batch=batch), [row for u in unconds for row in u]


def token_key(uncond: Any) -> tuple:
    """What must agree for unconds to share a call: the host stacks them into one tensor."""
    shapes = []
    for schedules in uncond:
        for s in schedules:
            c = s.cond
            t = c["crossattn"] if isinstance(c, dict) else c
            shapes.append(tuple(t.shape))
    return tuple(sorted(set(shapes)))
