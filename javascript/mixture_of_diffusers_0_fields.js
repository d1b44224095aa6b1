/*
 * Mixture of Diffusers: the preset format's fields (limits, defaults, one-line docs).
 * GENERATED from lib_mixture/fields.py by `python -m lib_mixture.generated --write`; do not edit.
 * Named to sort first: the WebUI loads an extension's scripts in filename order, and
 * mixture_of_diffusers_core.js reads MoDFields when it loads.
 */
(function(root) {
    "use strict";
    var MoDFields = {
        "version": 1,
        "fields": {
            "version": {"kind": "const", "doc": "Format version.", "min": 1, "max": 1, "required": true},
            "name": {"kind": "string", "doc": "Shown in preset lists.", "maxLength": 200, "default": ""},
            "units": {"kind": "enum", "doc": "Units of region boxes: px, or fractions of the canvas.", "options": ["px", "fraction"], "default": "px"},
            "canvas": {"kind": "object", "doc": "The canvas the region boxes were drawn on; boxes are scaled to the generation's size (and to the hires pass).", "default": null},
            "canvas.width": {"kind": "integer", "doc": "Canvas width.", "min": 8, "max": 16384, "required": true, "unit": "px"},
            "canvas.height": {"kind": "integer", "doc": "Canvas height.", "min": 8, "max": 16384, "required": true, "unit": "px"},
            "tiles": {"kind": "object", "doc": "A background grid of tiles driven by the main prompt. The planner places the fewest tiles with at least this overlap.", "nullable": true, "default": null},
            "tiles.width": {"kind": "integer", "doc": "Tile width (clamped to the canvas); auto: with tiles.height, the square tile with the lowest predicted step time that fits the device's free memory (see Time and memory).", "min": 64, "max": 16384, "auto": true, "unit": "px", "default": "auto"},
            "tiles.height": {"kind": "integer", "doc": "Tile height (clamped to the canvas); left out beside a width in px: the same (a square tile); auto: see tiles.width.", "min": 64, "max": 16384, "auto": true, "unit": "px", "default": "auto"},
            "tiles.overlap": {"kind": "integer", "doc": "Minimum overlap of neighbouring tiles, one value or per axis {x, y}.", "min": 0, "max": 16376, "perAxis": true, "unit": "px", "default": 64},
            "tiles.overlap.x": {"kind": "integer", "doc": "Minimum overlap across columns.", "min": 0, "max": 16376, "required": true, "unit": "px"},
            "tiles.overlap.y": {"kind": "integer", "doc": "Minimum overlap across rows.", "min": 0, "max": 16376, "required": true, "unit": "px"},
            "tiles.batch_size": {"kind": "integer", "doc": "Crops per model call (speed only: results do not depend on it); auto: the batch with the lowest predicted step time that fits the device's free memory.", "min": 1, "max": 64, "auto": true, "default": "auto"},
            "weights": {"kind": "object", "doc": "How every crop fades into its neighbours.", "default": null},
            "weights.kind": {"kind": "enum", "doc": "gaussian (the paper's) or constant.", "options": ["gaussian", "constant"], "default": "gaussian"},
            "weights.variance": {"kind": "number", "doc": "Gaussian variance (paper: 0.01); larger is softer.", "min": 0.0, "max": 10.0, "exclusiveMin": true, "default": 0.01},
            "regions": {"kind": "list", "doc": "Boxes with their own prompt.", "default": []},
            "regions[].x": {"kind": "number", "doc": "Left edge of the box.", "min": 0, "max": 16384, "fraction": [0.0, 1.0], "required": true, "unit": "px"},
            "regions[].y": {"kind": "number", "doc": "Top edge of the box.", "min": 0, "max": 16384, "fraction": [0.0, 1.0], "required": true, "unit": "px"},
            "regions[].width": {"kind": "number", "doc": "Box width.", "min": 8, "max": 16384, "fraction": [0.0, 1.0], "required": true, "unit": "px"},
            "regions[].height": {"kind": "number", "doc": "Box height.", "min": 8, "max": 16384, "fraction": [0.0, 1.0], "required": true, "unit": "px"},
            "regions[].prompt": {"kind": "string", "doc": "The region's prompt; empty: the main prompt.", "default": ""},
            "regions[].negative_prompt": {"kind": "string", "doc": "The region's negative prompt; empty: the main one.", "default": ""},
            "regions[].prompt_mode": {"kind": "enum", "doc": "replace: the region prompt alone; append: the main prompt, then the region's.", "options": ["replace", "append"], "default": "replace"},
            "regions[].cfg_scale": {"kind": "number", "doc": "The region's CFG scale; null: the main one.", "min": 0.0, "max": 100.0, "nullable": true, "default": null},
            "regions[].weight": {"kind": "number", "doc": "Multiplies the region's weights: above 1 it dominates where it overlaps others.", "min": 0.0, "max": 1000.0, "exclusiveMin": true, "default": 1.0},
            "regions[].seed": {"kind": "integer", "doc": "Noise for the region's box; -1 keeps the canvas's noise. Image k + 1 of a job uses the seed plus k (wrapped into the range).", "min": -1, "max": 4294967295, "default": -1},
            "regions[].guide": {"kind": "object", "doc": "A guide image that holds the box to it for a fraction of the steps.", "nullable": true, "default": null},
            "regions[].guide.image": {"kind": "string", "doc": "A data:image/...;base64 URL, a sha256: reference (what the infotext holds) or a file path inside the allowed guide folders (the API only where the server's owner allows it; the command line reads any path, relative to the preset file; see Security).", "required": true},
            "regions[].guide.strength": {"kind": "number", "doc": "Fraction of the steps during which the box is held to the guide.", "min": 0.0, "max": 1.0, "default": 0.5},
            "passes": {"kind": "enum", "doc": "txt2img with hires fix: mix the first pass, the hires pass, or both.", "options": ["first", "hires", "both"], "default": "both"},
            "micro_conditioning": {"kind": "enum", "doc": "SDXL and its refiner: the size conditioning of each crop. tiles: a background tile is told it is the crop at its offset of a canvas-sized image (crop_coords_top_left = its offset in px, original_size and target_size = the canvas); all: region crops too; off: every crop gets the whole image's vector, as the WebUI gives it. Other models ignore it.", "options": ["tiles", "all", "off"], "default": "tiles"},
            "upscale": {"kind": "object", "doc": "img2img: resize the init image once with a WebUI upscaler, then refine it with the tiled mixture.", "nullable": true, "default": null},
            "upscale.upscaler": {"kind": "string", "doc": "A name from the WebUI's upscaler list (Lanczos, R-ESRGAN 4x+, ...).", "maxLength": 200, "default": "Lanczos"},
            "upscale.scale": {"kind": "number", "doc": "Times the source size, each side rounded to 8 px.", "min": 0.0, "max": 16.0, "exclusiveMin": true, "nullable": true, "unit": "times the source size", "default": 2.0},
            "upscale.width": {"kind": "integer", "doc": "Target width (with height).", "min": 64, "max": 16384, "multipleOf": 8, "nullable": true, "unit": "px", "default": null},
            "upscale.height": {"kind": "integer", "doc": "Target height (with width).", "min": 64, "max": 16384, "multipleOf": 8, "nullable": true, "unit": "px", "default": null},
            "upscale.fit": {"kind": "enum", "doc": "A source of another aspect ratio: crop (cover, centred), pad (contain, borders extended) or stretch.", "options": ["crop", "pad", "stretch"], "default": "crop"},
            "upscale.guide_strength": {"kind": "number", "doc": "Fraction of the model calls during which the upscaled image guides the whole canvas (Algorithm 2); 0: off.", "min": 0.0, "max": 1.0, "default": 0.0},
            "upscale.controlnet_tile": {"kind": "string", "doc": "With sd-webui-controlnet: a ControlNet tile model that holds every tile to the upscaled image (one more unit: tile_resample, weight 1, no image of its own, so it takes the upscaled one). auto: the installed model with 'tile' in its name; or a model name as ControlNet lists it; '': none (units of your own without an image still get the upscaled image).", "maxLength": 200, "default": ""},
            "vae": {"kind": "object", "doc": "Tiled VAE encode and decode.", "nullable": true, "default": null},
            "vae.tiling": {"kind": "enum", "doc": "auto: tiled when a plain pass would not fit in free memory; on: always; off: never.", "options": ["auto", "on", "off"], "default": "auto"},
            "vae.tile": {"kind": "integer", "doc": "Core tile edge; null: chosen from the free memory.", "min": 64, "max": 4096, "multipleOf": 8, "nullable": true, "unit": "px", "default": null}
        },
        "defaultCostModel": "sd15-fp16-sdpa-h200",
        "auto": {"fallbackSide": 768, "fallbackBatch": 4, "defaultBudgetGib": 8.0, "sideStep": 64, "maxBatch": 64, "rowsPerCrop": 2},
        "costModels": {
            "sd15-fp16-sdpa-h200": {"name": "sd15-fp16-sdpa-h200", "source": "one NVIDIA H200, fp16, the SD 1.5 UNet architecture with random weights, PyTorch SDPA (flash attention: memory linear in the tokens), 2026-11: each figure the median step of one run of a 3840x2160 or 2048x2048 canvas divided by its calls; extra = peak allocated beyond the weights. bench/calibrate_cost.py measures the same on a lent GPU", "family": "sd1", "device": "cuda", "dtype": "fp16", "tileSides": [512, 768], "weightsBytes": 2147483648.0, "call": 0.03000443175568497, "rowCell": 3.3563539122328055e-07, "rowCell2": 3.002231758213687e-11, "baseBytes": 40595166.09297904, "rowCellBytes": 16351.780952571657, "rowCell2Bytes": 0.0},
            "sd15-fp32-sdpa-cpu-2core": {"name": "sd15-fp32-sdpa-cpu-2core", "source": "2 CPU threads (x86_64), fp32, the SD 1.5 UNet architecture with random weights, SDPA attention, torch 2.14.1+cu130, 2026-12-01; bench/calibrate_cost.py --device cpu --dtype fp32 --sides 16,24,32,48 --rows 2,4,8 --repeats 2 (crops of 128 to 384 px: larger ones are extrapolated)", "family": "sd1", "device": "cpu", "dtype": "fp32", "tileSides": [512, 768], "weightsBytes": 4264941228.0, "call": 1.1540924048196002, "rowCell": 0.0005951508509411713, "rowCell2": 1.3475008732695152e-07, "baseBytes": 133831417.43267843, "rowCellBytes": 47204.28417758692, "rowCell2Bytes": 0.0}
        }
    };
    if (typeof module !== "undefined" && module.exports) module.exports = MoDFields;
    else root.MoDFields = MoDFields;
})(typeof window !== "undefined" ? window : this);
