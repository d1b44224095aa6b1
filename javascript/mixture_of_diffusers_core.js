/*
 * Mixture of Diffusers: the pure part of the region editor (no DOM).
 *
 * Geometry and snapping (lib_mixture/geometry.py), the tile planner (lib_mixture/planner.py,
 * lib_mixture/plan.py), the weight profiles (lib_mixture/weights.py), hit testing, a time and memory
 * estimate (lib_mixture/cost.py), the choice of "auto" tile and batch sizes (lib_mixture/auto_plan.py),
 * the tiles section's checks and the editor's state reducer over the preset JSON (lib_mixture/preset.py).
 * The Python code is the reference: tests/js/core.test.js checks this file against it.
 *
 * The WebUI loads every javascript/*.js as a classic script into one global namespace, so
 * everything here lives in one IIFE and only `MoDCore` is global. In node the same object is
 * module.exports.
 */
(function(root) {
    "use strict";

    var LATENT = 8; // px per latent cell (Stable Diffusion's VAE factor)
    // Limits, defaults and options come from the preset's field table (lib_mixture/fields.py),
    // generated into mixture_of_diffusers_0_fields.js.
    var GENERATED = (typeof module !== "undefined" && module.exports)
        ? require("./mixture_of_diffusers_0_fields.js") : root.MoDFields;
    var FIELDS = GENERATED.fields;
    function field(path) { return FIELDS[path]; }
    function fieldDefault(path) { return FIELDS[path]["default"]; }

    /** The scalar fields directly inside ``table`` ("tiles", "regions[]"), key -> default, in the table's order. */
    function defaultsOf(table) {
        var out = {};
        Object.keys(FIELDS).forEach(function(path) {
            var cut = path.lastIndexOf("."), f = FIELDS[path];
            if (cut >= 0 && path.slice(0, cut) === table && f.kind !== "object" && f.kind !== "list") {
                out[path.slice(cut + 1)] = f.required ? undefined : f["default"];
            }
        });
        return out;
    }

    /** ``defaults`` with the values ``source`` gives (undefined keeps the default). */
    function filled(defaults, source) {
        var out = {};
        Object.keys(defaults).forEach(function(k) { out[k] = source[k] === undefined ? defaults[k] : source[k]; });
        return out;
    }

    /** A field's tooltip from the table: its one-line doc, what it allows and its default, then ``note``. */
    function fieldTitle(path, note) {
        var f = FIELDS[path], parts = [f.doc];
        if (f.options) parts.push("Allowed: " + f.options.join(", ") + ".");
        else if (f.min !== undefined) {
            var unit = !f.unit ? "" : f.unit === "px" ? " px" : " (" + f.unit + ")";
            parts.push("Allowed: " + (f.exclusiveMin ? "above " + f.min + ", up to " : f.min + " to ") + f.max + unit +
                (f.multipleOf ? ", a multiple of " + f.multipleOf : "") + (f.auto ? ", or " + AUTO : "") + ".");
        }
        if (f["default"] !== undefined && f["default"] !== null && f.kind !== "object") parts.push("Default: " + f["default"] + ".");
        if (note) parts.push(note);
        return parts.join(" ");
    }
    var MAX_SIDE = field("canvas.width").max;
    var MAX_BATCH = field("tiles.batch_size").max;
    var SEED_MAX = field("regions[].seed").max;
    var MAX_NAME = field("name").maxLength;
    var DEFAULT_VARIANCE = fieldDefault("weights.variance");
    var DEFAULT_BATCH_SIZE = 4; // lib_mixture/plan.py: regions-only presets
    var DEFAULT_TILES = defaultsOf("tiles");
    var TILE_MIN = field("tiles.width").min;
    var MODES = ["tiles", "regions", "both"];
    var PASSES = field("passes").options;
    var KINDS = field("weights.kind").options;
    var PROMPT_MODES = field("regions[].prompt_mode").options;
    var TOP_KEYS = Object.keys(FIELDS).filter(function(path) { return path.indexOf(".") < 0; });
    var FITS = field("upscale.fit").options;
    var VAE_TILING = field("vae.tiling").options;
    var MIN_SIDE = field("upscale.width").min; // px: the smallest canvas an upscale may produce
    var MAX_SCALE = field("upscale.scale").max;
    var VAE_TILE = {min: field("vae.tile").min, max: field("vae.tile").max};
    var DEFAULT_UPSCALE = {upscaler: fieldDefault("upscale.upscaler"), scale: fieldDefault("upscale.scale"),
        fit: fieldDefault("upscale.fit"), guide_strength: fieldDefault("upscale.guide_strength")};
    var DEFAULT_UPSCALE_SIZE = {width: 3840, height: 2160};
    // The panel's Upscale target radio: fixed targets by label, then "scale" and "size" (the number fields).
    var UPSCALE_PRESETS = {"2x": {scale: 2}, "QHD 2560\u00d71440": {width: 2560, height: 1440},
        "4K UHD 3840\u00d72160": {width: 3840, height: 2160}};
    var UPSCALE_CHOICES = ["off"].concat(Object.keys(UPSCALE_PRESETS), ["scale", "size"]);

    // The stored cost models by name and the default one (lib_mixture/cost.py, fitted to measured calls; generated
    // into MoDFields). See estimateCost and resolveAuto.
    var COST_MODELS = GENERATED.costModels;
    var COST_MODEL = COST_MODELS[GENERATED.defaultCostModel];
    var GIB = Math.pow(2, 30);
    // The automatic plan's constants (lib_mixture/cost.py, lib_mixture/auto_plan.py; generated into MoDFields).
    var AUTO_PLAN = GENERATED.auto;
    var ROWS_PER_CROP = AUTO_PLAN.rowsPerCrop; // cond and uncond of one image
    var SIDE_STEP = AUTO_PLAN.sideStep; // px between the sides CostModel.sides tries
    var MAX_RANK_BATCH = AUTO_PLAN.maxBatch; // cost.rank's max_batch
    // "auto" tile sizes and batch (lib_mixture.fields.AUTO), and what they are without a cost model.
    var AUTO = "auto";
    var FALLBACK_SIDE = AUTO_PLAN.fallbackSide, FALLBACK_BATCH = AUTO_PLAN.fallbackBatch;
    // What "auto" is fitted to where the page does not say the host's (the command line's default too).
    var EDITOR_BUDGET_BYTES = AUTO_PLAN.defaultBudgetGib * GIB,
        EDITOR_BUDGET_SOURCE = "the editor's default, " + AUTO_PLAN.defaultBudgetGib + " GiB";

    // ------------------------------------------------------------------ geometry

    /** Nearest multiple of grid, halves rounded up (geometry._nearest). */
    function nearest(value, grid) {
        grid = grid || LATENT;
        return Math.floor((value + grid / 2) / grid) * grid;
    }

    /** plan._round_to: nearest multiple of grid, at least one grid cell. */
    function roundTo(value, grid) {
        grid = grid || LATENT;
        return Math.max(grid, Math.floor(value / grid + 0.5) * grid);
    }

    function clamp(v, lo, hi) {
        return v < lo ? lo : v > hi ? hi : v;
    }

    /** geometry.snap_box: edges to the nearest grid line, clamped to the canvas, never empty. */
    function snapBox(x, y, width, height, canvasWidth, canvasHeight, grid) {
        grid = grid || LATENT;
        var left = nearest(x, grid), top = nearest(y, grid);
        var right = nearest(x + width, grid), bottom = nearest(y + height, grid);
        left = Math.min(Math.max(left, 0), canvasWidth - grid);
        top = Math.min(Math.max(top, 0), canvasHeight - grid);
        right = Math.min(Math.max(right, left + grid), canvasWidth);
        bottom = Math.min(Math.max(bottom, top + grid), canvasHeight);
        return {x: left, y: top, width: right - left, height: bottom - top};
    }

    /** The canvas the WebUI really samples: whole latent cells (floor to the grid, at least one). */
    function canvasSize(width, height, grid) {
        grid = grid || LATENT;
        return {
            width: Math.max(grid, Math.floor((+width || 0) / grid) * grid),
            height: Math.max(grid, Math.floor((+height || 0) / grid) * grid),
        };
    }

    // ------------------------------------------------------------------ planner

    /** planner.plan_axis, in latent cells: the fewest evenly spread tiles with overlap >= minOverlap. */
    function planAxis(length, tile, minOverlap) {
        if (!(length > 0) || !(tile > 0)) throw new Error("canvas and tile sizes must be positive");
        if (tile >= length) return {size: length, starts: [0]};
        if (!(minOverlap >= 0 && minOverlap < tile)) {
            throw new Error("overlap " + minOverlap + " must be in [0, " + (tile - 1) + "] latent cells (below the tile size)");
        }
        var count = axisCount(length, tile, minOverlap);
        var span = length - tile;
        var starts = [];
        for (var i = 0; i < count; i++) starts.push(Math.floor((i * span + Math.floor((count - 1) / 2)) / (count - 1)));
        return {size: tile, starts: starts};
    }

    function axisOverlaps(axis) {
        var out = [];
        for (var i = 1; i < axis.starts.length; i++) out.push(axis.size - (axis.starts[i] - axis.starts[i - 1]));
        return out;
    }

    /** planner.plan_tiles: pixel sizes (multiples of the grid), overlap rounded up to the grid. */
    /** How many tiles planAxis places, without placing them (lib_mixture.planner.axis_count). */
    function axisCount(length, tile, minOverlap) {
        return tile >= length ? 1 : 1 + Math.ceil((length - tile) / (tile - minOverlap));
    }

    /** How many tiles planTiles would place (pixels in), so a huge grid is refused first (planner.tile_count). */
    function tileCount(canvasWidth, canvasHeight, tileWidth, tileHeight, overlap, factor) {
        factor = factor || LATENT;
        var ox = typeof overlap === "object" ? overlap.x : overlap, oy = typeof overlap === "object" ? overlap.y : overlap;
        var tw = Math.max(1, Math.floor(tileWidth / factor)), th = Math.max(1, Math.floor(tileHeight / factor));
        return axisCount(Math.floor(canvasWidth / factor), tw, Math.min(Math.ceil(ox / factor), tw - 1)) *
            axisCount(Math.floor(canvasHeight / factor), th, Math.min(Math.ceil(oy / factor), th - 1));
    }

    function planTiles(canvasWidth, canvasHeight, tileWidth, tileHeight, overlap, factor) {
        factor = factor || LATENT;
        var ox = typeof overlap === "object" ? overlap.x : overlap;
        var oy = typeof overlap === "object" ? overlap.y : overlap;
        var checks = [["canvas width", canvasWidth], ["canvas height", canvasHeight], ["tile width", tileWidth], ["tile height", tileHeight]];
        checks.forEach(function(c) {
            if (!(c[1] > 0) || c[1] % factor) throw new Error(c[0] + " " + c[1] + " must be a positive multiple of " + factor);
        });
        var cols = planAxis(canvasWidth / factor, tileWidth / factor, Math.ceil(ox / factor));
        var rows = planAxis(canvasHeight / factor, tileHeight / factor, Math.ceil(oy / factor));
        var tiles = [];
        rows.starts.forEach(function(ry) {
            cols.starts.forEach(function(cx) {
                tiles.push({x: cx * factor, y: ry * factor, width: cols.size * factor, height: rows.size * factor});
            });
        });
        return {
            canvasWidth: canvasWidth, canvasHeight: canvasHeight, tiles: tiles, columns: cols, rows: rows,
            tileWidth: cols.size * factor, tileHeight: rows.size * factor, requestedOverlap: {x: ox, y: oy},
            overlapsX: axisOverlaps(cols).map(function(o) { return o * factor; }),
            overlapsY: axisOverlaps(rows).map(function(o) { return o * factor; }),
        };
    }

    /** planner.model_calls_per_step */
    function modelCallsPerStep(groupSizes, batchSize) {
        if (!(batchSize >= 1)) throw new Error("batch_size must be at least 1");
        return groupSizes.reduce(function(sum, n) { return sum + Math.ceil(n / batchSize); }, 0);
    }

    function overlapOf(tiles) {
        var o = tiles.overlap === undefined ? DEFAULT_TILES.overlap : tiles.overlap;
        return typeof o === "object" && o !== null ? {x: o.x, y: o.y} : {x: o, y: o};
    }

    /**
     * plan.build_plan on a canvas of width x height px: tiles, snapped region boxes, crops,
     * model calls per step and redundancy. `preset` is a decoded preset object (defaults
     * filled in as lib_mixture/preset.py does). Returns {problems: [...]} when the preset
     * cannot be placed, as build_plan raises PresetError, and, as build_plan refuses it, for an
     * "auto" tile size or batch (`batchSize` replaces the latter): resolveAuto chooses them for a
     * job first, or planOn does both on one canvas.
     */
    // lib_mixture.limits.Limits.max_crops, the default (a server's owner may set another in its settings)
    var MAX_CROPS = 2048;

    function buildPlan(preset, width, height, batchSize) {
        var factor = LATENT, problems = [];
        // As plan.build_plan refuses them: "auto" sizes are a job's choice (resolveAuto; planOn does both).
        var asked = preset.tiles ? tileSettings(preset.tiles) : null;
        if (asked && (asked.width === AUTO || asked.height === AUTO || (asked.batch_size === AUTO && batchSize == null))) {
            return {problems: ["tiles: \"auto\" tile or batch sizes are chosen for a job first (MoDCore.resolveAuto, or planOn)"]};
        }
        if (width === undefined || width === null || height === undefined || height === null) {
            if (!preset.canvas) return {problems: ["canvas: the canvas size is unknown"]};
            width = width == null ? preset.canvas.width : width;
            height = height == null ? preset.canvas.height : height;
        }
        [["width", width], ["height", height]].forEach(function(c) {
            if (!Number.isInteger(c[1]) || c[1] < factor) {
                problems.push("canvas." + c[0] + ": " + c[1] + " must be a whole number of px, at least " + factor +
                              " (one latent cell)");
            }
        });
        if (problems.length) return {problems: problems};
        // Any size: the model samples floor(px / 8) latent cells; boxes scale from the canvas they were drawn on.
        var drawnOn = preset.canvas || {width: width, height: height};
        width = Math.floor(width / factor) * factor;
        height = Math.floor(height / factor) * factor;
        var tiles = null, nRegions = (preset.regions || []).length;
        if (preset.tiles) {
            var t = tileSettings(preset.tiles);
            var tw = Math.min(roundTo(t.width, factor), width), th = Math.min(roundTo(t.height, factor), height);
            var count = tileCount(width, height, tw, th, overlapOf(t), factor);
            if (count + nRegions > MAX_CROPS) {
                return {problems: ["tiles: " + count + " tiles" + (nRegions ? " plus " + nRegions + " regions" : "") +
                                   " on this " + width + "x" + height + " canvas; allowed at most " + MAX_CROPS +
                                   " crops per step: use larger tiles or a smaller overlap"]};
            }
            try {
                tiles = planTiles(width, height, tw, th, overlapOf(t), factor);
            } catch (e) {
                return {problems: ["tiles: " + e.message]};
            }
        }
        if (!preset.tiles && nRegions > MAX_CROPS) {
            return {problems: ["regions: " + nRegions + " regions; allowed at most " + MAX_CROPS + " crops per step"]};
        }
        var sx = width / drawnOn.width, sy = height / drawnOn.height;
        if (preset.units === "fraction") {
            sx = width; sy = height;
        }
        var regions = [];
        (preset.regions || []).forEach(function(r, i) {
            var x = r.x * sx, y = r.y * sy, w = r.width * sx, h = r.height * sy;
            if (x >= width || y >= height) {
                problems.push("regions[" + i + "]: box starts at (" + x + ", " + y + ") px, outside the " + width + "x" + height + " canvas");
                return;
            }
            if (x + w > width + factor / 2 || y + h > height + factor / 2) {
                problems.push("regions[" + i + "]: box reaches past the " + width + "x" + height + " canvas");
                return;
            }
            regions.push({index: i, region: r, requested: [x, y, w, h], box: snapBox(x, y, w, h, width, height, factor)});
        });
        if (problems.length) return {problems: problems};
        if (!tiles && !regions.length) return {problems: ["regions: the preset has neither a tile grid nor any region"]};
        var size = batchSize != null ? batchSize : (preset.tiles ? tileSettings(preset.tiles).batch_size : DEFAULT_BATCH_SIZE);
        var weights = weightSettings(preset.weights);
        var crops = [];
        if (tiles) {
            tiles.tiles.forEach(function(b, i) {
                crops.push({box: b, cond: "main", tile: i, cfg_scale: null, weight: 1});
            });
        }
        regions.forEach(function(r) {
            var cfg = r.region.cfg_scale === undefined ? null : r.region.cfg_scale;
            crops.push({box: r.box, cond: r.index, cfg_scale: cfg, weight: r.region.weight === undefined ? 1 : r.region.weight});
        });
        var groups = {}, order = [];
        crops.forEach(function(c) {
            var key = (c.box.width / factor) + "x" + (c.box.height / factor) + "@" + c.cfg_scale;
            if (!(key in groups)) { groups[key] = {count: 0, area: c.box.width * c.box.height / (factor * factor)}; order.push(key); }
            groups[key].count += 1;
        });
        var area = crops.reduce(function(s, c) { return s + c.box.width * c.box.height; }, 0);
        return {
            width: width, height: height, factor: factor, tiles: tiles, regions: regions, crops: crops,
            weights: weights, batchSize: size,
            groups: order.map(function(k) { return groups[k]; }),
            modelCallsPerStep: modelCallsPerStep(order.map(function(k) { return groups[k].count; }), size),
            redundancy: area / (width * height),
        };
    }

    /** The JSON object `python -m lib_mixture plan --json` prints (the parts both sides compute). */
    function planSummary(plan) {
        var t = plan.tiles;
        return {
            canvas: {width: plan.width, height: plan.height, latent_width: plan.width / LATENT, latent_height: plan.height / LATENT},
            tile_grid: t ? {
                tile_width: t.tileWidth, tile_height: t.tileHeight, columns: t.columns.starts.length, rows: t.rows.starts.length,
                requested_overlap: {x: t.requestedOverlap.x, y: t.requestedOverlap.y}, overlaps_x: t.overlapsX, overlaps_y: t.overlapsY,
            } : null,
            tiles: t ? t.tiles.map(boxList) : [],
            regions: plan.regions.map(function(r) { return {index: r.index, box: boxList(r.box)}; }),
            crops: plan.crops.length,
            batch_size: plan.batchSize,
            redundancy: plan.redundancy,
            model_calls_per_step: plan.modelCallsPerStep,
        };
    }

    function boxList(b) {
        return [b.x, b.y, b.width, b.height];
    }

    // ------------------------------------------------------------------ weights

    /** weights.profile: one axis of a crop's weight map. */
    function profile(kind, length, variance) {
        variance = variance === undefined ? DEFAULT_VARIANCE : variance;
        var out = new Array(length);
        if (kind === "constant") {
            for (var i = 0; i < length; i++) out[i] = 1.0;
            return out;
        }
        if (kind !== "gaussian") throw new Error("weights kind must be one of gaussian, constant; got " + kind);
        if (!(variance > 0)) throw new Error("variance must be > 0, got " + variance);
        var centre = (length - 1) / 2, scale = 1.0 / Math.sqrt(2 * Math.PI * variance);
        for (var j = 0; j < length; j++) {
            var d = (j - centre) / length;
            out[j] = scale * Math.exp(-(d * d) / (2 * variance));
        }
        return out;
    }

    /**
     * The normalised weights of every crop of `plan` on the latent canvas, composed into one
     * colour per latent pixel: sum_i (w_i / sum_j w_j) * colour_i. `colours[i]` is [r, g, b] for
     * crop i. Returns {width, height, rgb (Float32Array, 3 per cell), total (Float64Array, the
     * un-normalised sum), uncovered (cells no crop reaches)}.
     */
    function weightField(plan, colours) {
        var lw = plan.width / LATENT, lh = plan.height / LATENT, n = lw * lh;
        var total = new Float64Array(n), acc = new Float64Array(n * 3);
        var kind = plan.weights.kind, variance = plan.weights.variance, cache = {};
        plan.crops.forEach(function(c, ci) {
            var bx = c.box.x / LATENT, by = c.box.y / LATENT, bw = c.box.width / LATENT, bh = c.box.height / LATENT;
            var kx = "w" + bw, ky = "h" + bh;
            var px = cache[kx] || (cache[kx] = profile(kind, bw, variance));
            var py = cache[ky] || (cache[ky] = profile(kind, bh, variance));
            var col = colours ? colours[ci % colours.length] : [0, 0, 0];
            var weight = c.weight;
            for (var yy = 0; yy < bh; yy++) {
                var row = (by + yy) * lw + bx, wy = py[yy] * weight;
                for (var xx = 0; xx < bw; xx++) {
                    var w = wy * px[xx], k = row + xx;
                    total[k] += w;
                    acc[3 * k] += w * col[0];
                    acc[3 * k + 1] += w * col[1];
                    acc[3 * k + 2] += w * col[2];
                }
            }
        });
        var rgb = new Float32Array(n * 3), uncovered = 0;
        for (var k = 0; k < n; k++) {
            var s = total[k];
            if (s > 0) {
                rgb[3 * k] = acc[3 * k] / s; rgb[3 * k + 1] = acc[3 * k + 1] / s; rgb[3 * k + 2] = acc[3 * k + 2] / s;
            } else {
                uncovered += 1;
            }
        }
        return {width: lw, height: lh, rgb: rgb, total: total, uncovered: uncovered};
    }

    /** Normalised weight of crop `index` at latent cell (cx, cy): w_i / sum_j w_j (0 where uncovered). */
    function normalisedWeightAt(plan, index, cx, cy) {
        var kind = plan.weights.kind, variance = plan.weights.variance, sum = 0, mine = 0;
        plan.crops.forEach(function(c, i) {
            var bx = c.box.x / LATENT, by = c.box.y / LATENT, bw = c.box.width / LATENT, bh = c.box.height / LATENT;
            if (cx < bx || cy < by || cx >= bx + bw || cy >= by + bh) return;
            var w = profile(kind, bw, variance)[cx - bx] * profile(kind, bh, variance)[cy - by] * c.weight;
            sum += w;
            if (i === index) mine = w;
        });
        return sum > 0 ? mine / sum : 0;
    }

    // ------------------------------------------------------------------ memory and cost

    /**
     * Predicted time per sampling step and peak memory of `plan` (one image; sampling, not VAE
     * decoding), as lib_mixture.cost.CostModel.step: each group of n equal crops runs
     * ceil(n / batch) calls of equal size (the last one smaller, as the engine splits them), each
     * of rows = crops x 2 (cond + uncond) crops of `cells` latent cells,
     *
     *     seconds = call + rowCell x rows x cells + rowCell2 x rows x cells^2   (per call, summed)
     *     bytes   = baseBytes + rowCellBytes x rows x cells + rowCell2Bytes x rows x cells^2   (largest call)
     *
     * plus the weights. The coefficients are fitted to calls measured on the device the model
     * names (`model.source`); another device, dtype or attention kernel changes the figures.
     */
    function estimateCost(plan, model) {
        model = model || COST_MODEL;
        var seconds = 0, activations = 0, rows = 0;
        plan.groups.forEach(function(g) {
            var calls = Math.ceil(g.count / plan.batchSize), size = Math.ceil(g.count / calls), cells = g.area;
            var last = g.count - size * (calls - 1), r = size * ROWS_PER_CROP;
            seconds += (calls - 1) * callSeconds(model, r, cells) + callSeconds(model, last * ROWS_PER_CROP, cells);
            var bytes = callBytes(model, r, cells);
            if (bytes > activations) { activations = bytes; rows = r; }
        });
        return {bytes: model.weightsBytes + activations, weightsBytes: model.weightsBytes, activationBytes: activations,
            seconds: seconds, rows: rows, model: model.name};
    }

    // The terms in CostModel's order, so that the sums round as Python's do (resolveAuto's choice and note match it).
    function callSeconds(model, rows, cells) {
        return model.call + model.rowCell * rows * cells + model.rowCell2 * rows * cells * cells;
    }

    function callBytes(model, rows, cells) {
        return model.baseBytes + model.rowCellBytes * rows * cells + model.rowCell2Bytes * rows * cells * cells;
    }

    /** CostModel.step: [seconds, peak bytes with the weights] of one step over `groups` ([count, cells] pairs) at `batch` crops a call. */
    function stepCost(model, groups, batch) {
        var seconds = 0, peak = 0;
        groups.forEach(function(g) {
            var count = g[0], cells = g[1], calls = Math.ceil(count / batch), size = Math.ceil(count / calls);
            var last = count - size * (calls - 1);
            seconds += (calls - 1) * callSeconds(model, size * ROWS_PER_CROP, cells) + callSeconds(model, last * ROWS_PER_CROP, cells);
            peak = Math.max(peak, callBytes(model, size * ROWS_PER_CROP, cells));
        });
        return [seconds, model.weightsBytes + peak];
    }

    /**
     * The cost model `name` (MoDFields.costModels), or the copy lib_mixture.cost.for_host makes of
     * one for another dtype, "<name> (memory x<ratio> for <dtype>)", its memory scaled; null when neither.
     */
    function costModel(name) {
        var own = function(n) { return Object.prototype.hasOwnProperty.call(COST_MODELS, n) ? COST_MODELS[n] : null; };
        if (own(name)) return own(name);
        var m = /^(.+) \(memory x([0-9.]+) for (\w+)\)$/.exec(String(name)), base = m && own(m[1]);
        if (!base) return null;
        var ratio = +m[2];
        return Object.assign({}, base, {name: String(name), dtype: m[3], weightsBytes: base.weightsBytes * ratio,
            baseBytes: base.baseBytes * ratio, rowCellBytes: base.rowCellBytes * ratio, rowCell2Bytes: base.rowCell2Bytes * ratio});
    }

    /** CostModel.sides: the square tile sides (px) an automatic plan tries, the model's tileSides band every 64 px. */
    function modelSides(model) {
        var out = [];
        for (var side = model.tileSides[0]; side <= model.tileSides[1]; side += SIDE_STEP) out.push(side);
        return out;
    }

    function callsOf(groups, batch) {
        return groups.reduce(function(sum, g) { return sum + Math.ceil(g[0] / batch); }, 0);
    }

    /**
     * cost.rank: every grid ({tileWidth, tileHeight, tiles, groups: [[count, cells], ...]}) at every
     * batch size (`batches`, default 1 to `maxBatch` less those that make no fewer calls than one
     * smaller) as a choice {tileWidth, tileHeight, tiles, batchSize, calls, seconds, peakBytes},
     * fastest first (ties: the smaller peak; the sort is stable, as Python's).
     */
    function rank(model, grids, batches, maxBatch) {
        var given = batches !== undefined && batches !== null, out = [];
        maxBatch = maxBatch || MAX_RANK_BATCH;
        grids.forEach(function(g) {
            var largest = Math.max.apply(null, g.groups.map(function(c) { return c[0]; })), tries = batches;
            if (!given || !batches.length) {
                tries = [];
                for (var b = 1; b <= Math.min(maxBatch, largest); b++) tries.push(b);
            }
            tries.forEach(function(batch) {
                var calls = callsOf(g.groups, batch);
                if (!given && batch > 1 && calls === callsOf(g.groups, batch - 1)) return; // as many calls, more memory
                var cost = stepCost(model, g.groups, batch);
                out.push({tileWidth: g.tileWidth, tileHeight: g.tileHeight, tiles: g.tiles, batchSize: batch, calls: calls,
                    seconds: cost[0], peakBytes: cost[1]});
            });
        });
        return out.sort(function(a, b) { return a.seconds - b.seconds || a.peakBytes - b.peakBytes; });
    }

    /** cost.within: the choices whose predicted peak fits `budgetBytes`, in their order. */
    function within(choices, budgetBytes) {
        return choices.filter(function(c) { return c.peakBytes <= budgetBytes; });
    }

    /** cost.tile_grids: the square grids of `sides` px (clamped to the canvas; a side the overlap does not fit below left out). */
    function tileGrids(canvasWidth, canvasHeight, overlap, sides, factor) {
        factor = factor || LATENT;
        var seen = {}, out = [];
        sides.forEach(function(side) {
            var tw = Math.min(side, canvasWidth), th = Math.min(side, canvasHeight), n;
            if (seen[tw + "x" + th]) return;
            seen[tw + "x" + th] = true;
            try {
                n = planTiles(canvasWidth, canvasHeight, tw, th, overlap, factor).tiles.length;
            } catch (e) {
                return; // the overlap does not fit this tile
            }
            out.push({tileWidth: tw, tileHeight: th, tiles: n, groups: [[n, Math.floor(tw / factor) * Math.floor(th / factor)]]});
        });
        return out;
    }

    /** Python's f"{x:.<digits>f}": toFixed, except that a half goes to the even neighbour (toFixed sends it up). */
    function pyFixed(x, digits) {
        // x lies exactly halfway at `digits` decimals iff x * 2^(digits + 1) is an odd integer
        var halves = x * Math.pow(2, digits + 1);
        if (!Number.isInteger(halves) || Math.abs(halves) % 2 !== 1) return x.toFixed(digits);
        var n = Math.floor(Math.abs(x) * Math.pow(10, digits)), text;
        if (n % 2) n += 1;
        text = String(n);
        while (text.length <= digits) text = "0" + text;
        return (x < 0 ? "-" : "") + (digits ? text.slice(0, -digits) + "." + text.slice(-digits) : text);
    }

    // ------------------------------------------------------------------ "auto" tile and batch sizes (lib_mixture/auto_plan.py)

    /** A Budget of auto_plan: the default cost model and 8 GiB, for a page that does not say the host's. */
    function editorBudget() {
        return {model: COST_MODEL, bytes: EDITOR_BUDGET_BYTES, source: EDITOR_BUDGET_SOURCE};
    }

    /** `p` (canonical) with its auto tile size set to `side` and its auto batch to `batch` (null: left as asked), and the same with the batch as asked. */
    function fixedTiles(p, side, batch) {
        var t = p.tiles, sized = Object.assign({}, t);
        if (side !== null && t.width === AUTO) {
            sized.width = side;
            sized.height = side;
        }
        var batched = Object.assign({}, sized);
        if (batch !== null && t.batch_size === AUTO) batched.batch_size = batch;
        return {chosen: assign(p, {tiles: batched}), shown: assign(p, {tiles: sized})};
    }

    /** auto_plan._what: the preset's tile size, and where the canvas clamps it, the tiles it makes there. */
    function autoWhat(tiles, choice) {
        if (!choice) return tiles.width + "x" + tiles.height + " px tiles, batch " + tiles.batch_size;
        var clamped = choice.tileWidth !== tiles.width || choice.tileHeight !== tiles.height;
        return tiles.width + "x" + tiles.height + " px tiles (" + choice.tiles + " of them" +
            (clamped ? ", " + choice.tileWidth + "x" + choice.tileHeight + " on this canvas" : "") + "), batch " + tiles.batch_size;
    }

    /**
     * auto_plan.resolve: the preset's "auto" tile size and batch chosen for a job on `canvases`
     * ([width, height] px of each pass it mixes; the choice is made on the largest and holds for
     * all) within `budget` ({model: a cost model or null, bytes, source}; null: none given).
     * Returns {preset (canonical, every size a number), shown (the tile size chosen, the batch as
     * asked: what the infotext keeps), choice (rank's, or null), fits, note (one line, "" where
     * nothing was auto)}, or {problems} where Python refuses: the tiles section's values
     * (tileProblems), no side of the model's band above the overlap, or every side's plan.
     */
    function resolveAuto(preset, canvases, budget) {
        var p = canonical(preset), t = p.tiles;
        if (!t || !(t.width === AUTO || t.height === AUTO || t.batch_size === AUTO) || !canvases || !canvases.length) {
            return {preset: p, shown: p, choice: null, fits: 0, note: ""};
        }
        var problems = tileProblems(preset.tiles);
        if (problems.length) return {problems: problems};
        var autoSize = t.width === AUTO, autoBatch = t.batch_size === AUTO, fixed;
        var canvas = canvases.reduce(function(a, c) { return cellsOf(c) > cellsOf(a) ? c : a; });
        var model = budget ? budget.model || null : null;
        if (!model) {
            fixed = fixedTiles(p, autoSize ? FALLBACK_SIDE : null, autoBatch ? FALLBACK_BATCH : null);
            var why = budget ? budget.source : "no memory budget was given";
            return {preset: fixed.chosen, shown: fixed.shown, choice: null, fits: 0,
                note: "auto: " + autoWhat(fixed.chosen.tiles) + " (the fixed default: " + why + ")"};
        }
        var o = overlapOf(t), overlap = Math.max(o.x, o.y);
        var sides = autoSize ? modelSides(model).filter(function(s) { return s > overlap; }) : [null];
        if (!sides.length) {
            var band = model.tileSides;
            return {problems: ["tiles.overlap: " + overlap + " px leaves no room in an automatic tile (" + band[0] + " to " + band[1] +
                " px for " + model.name + "); give an overlap below " + band[1] + " px, or tiles.width and tiles.height in px"]};
        }
        var grids = [], seen = {}, error = null;
        sides.forEach(function(side) {
            var plan = buildPlan(fixedTiles(p, side, 1).chosen, canvas[0], canvas[1]);
            if (plan.problems) { // too many crops, or the overlap does not fit below this side
                error = plan.problems;
                return;
            }
            var key = plan.tiles.tileWidth + "x" + plan.tiles.tileHeight;
            if (seen[key]) return; // clamped to the canvas like a smaller side: the same grid
            seen[key] = true;
            grids.push({tileWidth: plan.tiles.tileWidth, tileHeight: plan.tiles.tileHeight, tiles: plan.tiles.tiles.length, side: side,
                groups: plan.groups.map(function(g) { return [g.count, g.area]; })});
        });
        if (!grids.length) return {problems: error}; // every grid refused: the largest tiles' problems
        var ranked = rank(model, grids, autoBatch ? null : [t.batch_size]), fits = within(ranked, budget.bytes);
        var best = fits.length ? fits[0] : ranked.reduce(function(a, c) {
            return c.peakBytes < a.peakBytes || (c.peakBytes === a.peakBytes && c.seconds < a.seconds) ? c : a;
        });
        var grid = grids.filter(function(g) { return g.tileWidth === best.tileWidth && g.tileHeight === best.tileHeight; })[0];
        fixed = fixedTiles(p, grid.side, autoBatch ? best.batchSize : null);
        var verdict = fits.length ? (fits.length > 1 ? "the fastest of " + fits.length + " grids and batches that fit"
            : "the only grid and batch that fits")
            : ranked.length > 1 ? "OVER the budget: none of the " + ranked.length + " grids and batches tried fits; this one has " +
              "the smallest predicted peak" : "OVER the budget: the one grid and batch tried does not fit";
        return {preset: fixed.chosen, shown: fixed.shown, choice: best, fits: fits.length,
            note: "auto: " + autoWhat(fixed.chosen.tiles, best) + ": " + pyFixed(best.seconds, 3) + " s/step and " +
                pyFixed(best.peakBytes / GIB, 2) + " GiB predicted by " + model.name + " for " + pyFixed(budget.bytes / GIB, 2) +
                " GiB (" + budget.source + "): " + verdict};
    }

    function cellsOf(size) {
        return Math.floor(size[0] / LATENT) * Math.floor(size[1] / LATENT);
    }

    /**
     * auto_plan.plan_on: buildPlan on one width x height px canvas (default: the preset's), its
     * "auto" sizes chosen there first (resolveAuto, whose result the plan keeps as `auto`; a null
     * `budget` gives the fixed defaults). {problems} where either refuses.
     */
    function planOn(preset, width, height, budget) {
        if ((width == null || height == null) && preset.canvas) {
            width = width == null ? preset.canvas.width : width;
            height = height == null ? preset.canvas.height : height;
        }
        var auto = Number.isInteger(width) && Number.isInteger(height) ? resolveAuto(preset, [[width, height]], budget) : null;
        if (auto && auto.problems) return {problems: auto.problems};
        var plan = buildPlan(auto ? auto.preset : preset, width, height);
        if (!plan.problems) plan.auto = auto;
        return plan;
    }

    /** The hires-fix target of txt2img (processing.calculate_target_resolution), floored to the latent grid. */
    function hiresSize(width, height, scale, resizeX, resizeY) {
        var x, y;
        resizeX = resizeX || 0; resizeY = resizeY || 0;
        if (!resizeX && !resizeY) {
            x = Math.floor(width * scale); y = Math.floor(height * scale);
        } else if (!resizeY) {
            x = resizeX; y = Math.floor(resizeX * height / width);
        } else if (!resizeX) {
            x = Math.floor(resizeY * width / height); y = resizeY;
        } else if (width / height < resizeX / resizeY) {
            x = resizeX; y = Math.floor(resizeX * height / width);
        } else {
            x = Math.floor(resizeY * width / height); y = resizeY;
        }
        return canvasSize(x, y);
    }

    // ------------------------------------------------------------------ upscale (lib_mixture/upscale.py)

    /** Python's round(): halves go to the even neighbour (Math.round sends them up). */
    function pyRound(x) {
        var f = Math.floor(x), d = x - f;
        return d > 0.5 ? f + 1 : d < 0.5 ? f : f % 2 === 0 ? f : f + 1;
    }

    /** math.isclose with its default rel_tol (1e-9). */
    function isClose(a, b) {
        return a === b || Math.abs(a - b) <= 1e-9 * Math.max(Math.abs(a), Math.abs(b));
    }

    /** Python's format(x, "g"), so the messages read exactly as the engine's. */
    function formatG(x) {
        if (x === 0) return "0";
        var parts = x.toExponential(5).split("e"), exp = +parts[1];
        if (exp < -4 || exp >= 6) {
            var digits = Math.abs(exp) < 10 ? "0" + Math.abs(exp) : String(Math.abs(exp));
            return parts[0].replace(/\.?0+$/, "") + "e" + (exp < 0 ? "-" : "+") + digits;
        }
        var fixed = x.toFixed(5 - exp);
        return fixed.indexOf(".") < 0 ? fixed : fixed.replace(/\.?0+$/, "");
    }

    /**
     * upscale.target_size: {width, height} in px, or {error} (Python's message) when a scale
     * takes a side out of [64, 16384] px. A scale rounds each side to the nearest multiple of 8.
     */
    function targetSize(upscale, srcW, srcH) {
        if (srcW < 1 || srcH < 1) return {error: "the source image is empty (" + srcW + "x" + srcH + ")"};
        if (upscale.width != null && upscale.height != null) return {width: upscale.width, height: upscale.height};
        var scale = upscale.scale != null ? +upscale.scale : DEFAULT_UPSCALE.scale;
        var w = Math.max(LATENT, pyRound(srcW * scale / LATENT) * LATENT);
        var h = Math.max(LATENT, pyRound(srcH * scale / LATENT) * LATENT);
        if (Math.min(w, h) >= MIN_SIDE && Math.max(w, h) <= MAX_SIDE) return {width: w, height: h};
        var lo = MIN_SIDE / Math.min(srcW, srcH), hi = MAX_SIDE / Math.max(srcW, srcH);
        var allowed = lo <= hi ? "scales from " + formatG(Math.ceil(lo * 100) / 100) + " to " + formatG(Math.floor(hi * 100) / 100)
            : "no scale (the aspect ratio is too extreme); give width and height";
        return {error: "upscale.scale: " + formatG(scale) + " takes this " + srcW + "x" + srcH + " image to " + w + "x" + h +
            "; each side must be in [" + MIN_SIDE + ", " + MAX_SIDE + "] px, which allows " + allowed + " for this image"};
    }

    /**
     * upscale.fit_geometry: resize the source to resize_w x resize_h and put its corner at
     * (x, y) on the width x height target (negative: cropped, positive: padded).
     */
    function fitGeometry(srcW, srcH, width, height, fit) {
        if (fit === "stretch") return {width: width, height: height, resize_w: width, resize_h: height, x: 0, y: 0};
        if (fit !== "crop" && fit !== "pad") throw new Error("fit must be 'crop', 'pad' or 'stretch', got " + JSON.stringify(fit));
        var kx = width / srcW, ky = height / srcH, k = fit === "crop" ? Math.max(kx, ky) : Math.min(kx, ky);
        // the side that decided k lands exactly on the target
        var rw = isClose(k, kx) ? width : Math.max(1, pyRound(srcW * k));
        var rh = isClose(k, ky) ? height : Math.max(1, pyRound(srcH * k));
        return {width: width, height: height, resize_w: rw, resize_h: rh, x: Math.floor((width - rw) / 2), y: Math.floor((height - rh) / 2)};
    }

    /** What an upscale section makes of a srcW x srcH image: {width, height, fit, geometry}, or {error}. */
    function upscaleTarget(upscale, srcW, srcH) {
        var u = upscaleSettings(upscale);
        if (FITS.indexOf(u.fit) < 0) return {error: "upscale.fit: " + JSON.stringify(u.fit) + " is not allowed; allowed: " + FITS.join(", ")};
        var t = targetSize(u, srcW, srcH);
        if (t.error) return t;
        return {width: t.width, height: t.height, fit: u.fit, geometry: fitGeometry(srcW, srcH, t.width, t.height, u.fit)};
    }

    // ------------------------------------------------------------------ hit testing and box edits

    var HANDLES = ["nw", "n", "ne", "e", "se", "s", "sw", "w"];

    function handlePoints(b) {
        var cx = b.x + b.width / 2, cy = b.y + b.height / 2, r = b.x + b.width, d = b.y + b.height;
        return {nw: [b.x, b.y], n: [cx, b.y], ne: [r, b.y], e: [r, cy], se: [r, d], s: [cx, d], sw: [b.x, d], w: [b.x, cy]};
    }

    /**
     * What is under the point (x, y) (canvas px): a handle of the selected box (within
     * `radius`), else the topmost box containing it (the last in the list), else nothing.
     */
    function hitTest(boxes, x, y, selected, radius) {
        radius = radius || 6;
        if (selected >= 0 && selected < boxes.length) {
            var pts = handlePoints(boxes[selected]);
            for (var i = 0; i < HANDLES.length; i++) {
                var p = pts[HANDLES[i]];
                if (Math.abs(x - p[0]) <= radius && Math.abs(y - p[1]) <= radius) return {kind: "handle", index: selected, handle: HANDLES[i]};
            }
        }
        for (var j = boxes.length - 1; j >= 0; j--) {
            var b = boxes[j];
            if (x >= b.x && x < b.x + b.width && y >= b.y && y < b.y + b.height) return {kind: "region", index: j};
        }
        return {kind: "none", index: -1};
    }

    /** A box dragged from (x0, y0) to (x1, y1), edges snapped to the grid, inside the canvas. */
    function boxFromDrag(x0, y0, x1, y1, canvasWidth, canvasHeight, grid) {
        grid = grid || LATENT;
        var l = clamp(nearest(Math.min(x0, x1), grid), 0, canvasWidth - grid);
        var t = clamp(nearest(Math.min(y0, y1), grid), 0, canvasHeight - grid);
        var r = clamp(nearest(Math.max(x0, x1), grid), l + grid, canvasWidth);
        var b = clamp(nearest(Math.max(y0, y1), grid), t + grid, canvasHeight);
        return {x: l, y: t, width: r - l, height: b - t};
    }

    /** `box` moved by (dx, dy), its corner snapped to the grid, kept whole inside the canvas. */
    function moveBox(box, dx, dy, canvasWidth, canvasHeight, grid) {
        grid = grid || LATENT;
        var w = Math.min(box.width, canvasWidth), h = Math.min(box.height, canvasHeight);
        return {
            x: clamp(nearest(box.x + dx, grid), 0, Math.max(0, canvasWidth - w)),
            y: clamp(nearest(box.y + dy, grid), 0, Math.max(0, canvasHeight - h)),
            width: w, height: h,
        };
    }

    /** `box` with the edges of `handle` ("n", "se", ...) moved by (dx, dy), snapped, at least one cell. */
    function resizeBox(box, handle, dx, dy, canvasWidth, canvasHeight, grid) {
        grid = grid || LATENT;
        var l = box.x, t = box.y, r = box.x + box.width, b = box.y + box.height;
        if (handle.indexOf("w") >= 0) l = clamp(nearest(l + dx, grid), 0, r - grid);
        if (handle.indexOf("e") >= 0) r = clamp(nearest(r + dx, grid), l + grid, canvasWidth);
        if (handle.indexOf("n") >= 0) t = clamp(nearest(t + dy, grid), 0, b - grid);
        if (handle.indexOf("s") >= 0) b = clamp(nearest(b + dy, grid), t + grid, canvasHeight);
        return {x: l, y: t, width: r - l, height: b - t};
    }

    // ------------------------------------------------------------------ preset objects

    function isObject(v) {
        return v !== null && typeof v === "object" && !Array.isArray(v);
    }

    /** ``out`` with the keys of ``source`` it lacks appended: a typo stays for the validator to report. */
    function keepUnknown(out, source) {
        if (isObject(source)) Object.keys(source).forEach(function(k) { if (!(k in out)) out[k] = source[k]; });
        return out;
    }

    /** A tile side as parse_preset takes it: an integer in [64, 16384] px (anything else is "auto" there, or refused). */
    function isTileSide(v) {
        return Number.isInteger(v) && v >= TILE_MIN && v <= MAX_SIDE;
    }

    /**
     * The tile grid with every field, as parse_preset reads it: one side in px and the other
     * absent is a square tile; an absent overlap is the default, below the tile (an auto side
     * counts as the largest). "auto" stays "auto".
     */
    function tileSettings(tiles) {
        tiles = tiles || {};
        var out = keepUnknown(filled(DEFAULT_TILES, tiles), tiles);
        if (tiles.height === undefined && isTileSide(tiles.width)) out.height = tiles.width;
        else if (tiles.width === undefined && isTileSide(tiles.height)) out.width = tiles.height;
        if (tiles.overlap === undefined) {
            var d = DEFAULT_TILES.overlap, side = function(v) { return isTileSide(v) ? v : MAX_SIDE; };
            var ox = Math.min(d, Math.max(side(out.width) - LATENT, 0)), oy = Math.min(d, Math.max(side(out.height) - LATENT, 0));
            out.overlap = ox === oy ? ox : {x: ox, y: oy};
        }
        return out;
    }

    /** checker.show: a value as Python's json.dumps writes it (ASCII, ", " and ": "), cut to 60 characters. */
    function show(value) {
        var text = pyJson(value);
        return text.length <= 60 ? text : text.slice(0, 57) + "...";
    }

    function pyJson(v) {
        if (v === null || v === undefined) return "null";
        if (typeof v === "boolean") return v ? "true" : "false";
        if (typeof v === "number") return pyNumber(v);
        if (typeof v === "string") {
            return JSON.stringify(v).replace(/[\u007f-\uffff]/g, function(c) { return "\\u" + ("000" + c.charCodeAt(0).toString(16)).slice(-4); });
        }
        if (Array.isArray(v)) return "[" + v.map(pyJson).join(", ") + "]";
        return "{" + Object.keys(v).map(function(k) { return pyJson(k) + ": " + pyJson(v[k]); }).join(", ") + "}";
    }

    /** A number as Python prints it: a whole one as an int (JSON's integers), else float's repr. */
    function pyNumber(x) {
        if (!isFinite(x)) return x > 0 ? "Infinity" : x < 0 ? "-Infinity" : "NaN";
        if (Number.isInteger(x)) return BigInt(x).toString();
        var parts = x.toExponential().split("e"), exp = +parts[1];
        if (exp >= -4 && exp < 16) return String(x);
        return parts[0] + "e" + (exp < 0 ? "-" : "+") + (Math.abs(exp) < 10 ? "0" : "") + Math.abs(exp);
    }

    /**
     * Checker.field for a number row (integer, "auto" where the row allows it): [the value, or the
     * row's default when it is refused; the problem or null]. `hi` and `note` as Checker.field's.
     */
    function checkNumber(path, value, at, hi, note) {
        var f = FIELDS[path], integer = f.kind === "integer";
        if (f.auto && value === AUTO) return [AUTO, null];
        if (f.auto && typeof value === "string" && value.trim().toLowerCase() === AUTO) {
            return [f.required ? null : f["default"], at + ": " + show(value) + ": write \"" + AUTO + "\" (lower case) for a value chosen at generation"];
        }
        var lo = f.min, unit = !f.unit ? "" : f.unit === "px" ? " px" : " (" + f.unit + ")";
        hi = hi === undefined ? f.max : hi;
        var allowed = (f.exclusiveMin ? "(" : "[") + lo + ", " + hi + "]" + unit + (note || "") + (f.auto ? " or \"" + AUTO + "\"" : "") + (f.nullable ? " or null" : "");
        var fallback = f.required ? null : f["default"];
        if (typeof value !== "number" || !isFinite(value) || (integer && !Number.isInteger(value))) {
            return [fallback, at + ": expected " + (integer ? "an integer" : "a number") + " in " + allowed + ", got " + show(value)];
        }
        if (value < lo || value > hi || (f.exclusiveMin && value === lo)) {
            return [fallback, at + ": " + pyNumber(value) + " is out of range; allowed " + allowed];
        }
        if (f.multipleOf && value % f.multipleOf) {
            var down = Math.floor(value / f.multipleOf) * f.multipleOf;
            return [fallback, at + ": " + value + " is not a multiple of " + f.multipleOf + " px (one latent cell); nearest: " + down +
                " or " + (down + f.multipleOf)];
        }
        return [value, null];
    }

    /**
     * The problems parse_preset finds in a tiles section, in its words and order: each value
     * (a number in range, or "auto" for the sides and the batch), both sides "auto" or both in px,
     * the overlap below the tile. Unknown keys are left to the Python validator.
     */
    function tileProblems(t) {
        if (t === undefined || t === null) return [];
        if (!isObject(t)) return ["tiles: expected an object, got " + show(t)];
        var problems = [], grid = {};
        var read = function(path, value, at, hi, note) {
            var got = checkNumber(path, value, at, hi, note);
            if (got[1]) problems.push(got[1]);
            return got[0];
        };
        ["width", "height", "batch_size"].forEach(function(k) {
            grid[k] = t[k] === undefined ? DEFAULT_TILES[k] : read("tiles." + k, t[k], "tiles." + k);
        });
        if (t.height === undefined && typeof grid.width === "number") grid.height = grid.width; // a square tile
        else if (t.width === undefined && typeof grid.height === "number") grid.width = grid.height;
        if (t.width === grid.width && t.height === grid.height && (grid.width === AUTO) !== (grid.height === AUTO)) {
            var fixed = grid.height === AUTO ? "width" : "height";
            problems.push("tiles." + fixed + ": " + show(grid[fixed]) + " beside \"" + AUTO + "\": auto chooses both sides of a square tile; " +
                "give both tiles.width and tiles.height as \"" + AUTO + "\" or both in px");
        }
        var tw = typeof grid.width === "number" ? grid.width : MAX_SIDE, th = typeof grid.height === "number" ? grid.height : MAX_SIDE;
        var o = t.overlap;
        if (isObject(o)) {
            ["x", "y"].forEach(function(k) { if (o[k] === undefined) problems.push("tiles.overlap." + k + ": is required"); });
            if (o.x !== undefined) read("tiles.overlap.x", o.x, "tiles.overlap.x", Math.max(tw - LATENT, 0), " (below the tile width)");
            if (o.y !== undefined) read("tiles.overlap.y", o.y, "tiles.overlap.y", Math.max(th - LATENT, 0), " (below the tile height)");
        } else if (o !== undefined) {
            read("tiles.overlap", o, "tiles.overlap", Math.max(Math.min(tw, th) - LATENT, 0), " (below the tile size)");
        }
        return problems;
    }

    function weightSettings(weights) {
        weights = weights || {};
        return keepUnknown(filled(defaultsOf("weights"), weights), weights);
    }

    var UPSCALE_KEYS = ["upscaler", "scale", "width", "height", "fit", "guide_strength", "controlnet_tile"];

    /** An upscale section with every field in Upscale's order; a target size excludes the default scale, and no ControlNet tile model the empty name. */
    function upscaleSettings(u) {
        u = isObject(u) ? u : {};
        var sized = u.width != null || u.height != null;
        var out = {upscaler: u.upscaler === undefined ? DEFAULT_UPSCALE.upscaler : u.upscaler};
        if (u.scale != null || !sized) out.scale = u.scale != null ? u.scale : DEFAULT_UPSCALE.scale;
        if (u.width != null) out.width = u.width;
        if (u.height != null) out.height = u.height;
        out.fit = u.fit === undefined ? DEFAULT_UPSCALE.fit : u.fit;
        out.guide_strength = u.guide_strength === undefined ? DEFAULT_UPSCALE.guide_strength : u.guide_strength;
        if (u.controlnet_tile) out.controlnet_tile = u.controlnet_tile; // Preset.to_dict leaves out the default ""
        Object.keys(u).forEach(function(k) { if (UPSCALE_KEYS.indexOf(k) < 0) out[k] = u[k]; });
        return out;
    }

    function vaeSettings(v) {
        v = isObject(v) ? v : {};
        return keepUnknown(filled(defaultsOf("vae"), v), v);
    }

    /** Preset.to_dict leaves out the default VAE settings. */
    function isDefaultVae(v) {
        return Object.keys(v).length === 2 && v.tiling === "auto" && v.tile === null;
    }

    /** A region with every field, in the order Preset.to_dict writes them; unknown keys kept last. */
    function fullRegion(r) {
        var out = filled(defaultsOf("regions[]"), r);
        if (r.guide !== undefined && r.guide !== null) out.guide = r.guide;
        Object.keys(r).forEach(function(k) { if (!(k in out) && k !== "guide") out[k] = r[k]; });
        return out;
    }

    /** The preset in Preset.to_dict's key order (unknown keys kept last, for the validator to report). */
    function canonical(p) {
        var out = {version: p.version === undefined ? 1 : p.version, name: p.name || "", units: p.units || "px"};
        if (p.canvas) out.canvas = keepUnknown({width: p.canvas.width, height: p.canvas.height}, p.canvas);
        if (p.tiles) {
            var t = tileSettings(p.tiles), o = overlapOf(t);
            out.tiles = Object.assign({}, t, {overlap: o.x === o.y ? o.x : {x: o.x, y: o.y}});
        }
        out.weights = weightSettings(p.weights);
        out.regions = (Array.isArray(p.regions) ? p.regions : []).map(function(r) { return isObject(r) ? fullRegion(r) : r; });
        out.passes = p.passes || "both";
        out.micro_conditioning = p.micro_conditioning === undefined ? fieldDefault("micro_conditioning") : p.micro_conditioning;
        // sections that are not objects stay as they are, for the validator to report
        if (p.upscale !== undefined && p.upscale !== null) out.upscale = isObject(p.upscale) ? upscaleSettings(p.upscale) : p.upscale;
        var vae = isObject(p.vae) ? vaeSettings(p.vae) : p.vae;
        if (vae !== undefined && vae !== null && !(isObject(vae) && isDefaultVae(vae))) out.vae = vae;
        Object.keys(p).forEach(function(k) { if (TOP_KEYS.indexOf(k) < 0) out[k] = p[k]; });
        return out;
    }

    /** Preset.to_json(indent=2) of a canonical preset. */
    function serialise(preset) {
        return JSON.stringify(canonical(preset), null, 2);
    }

    /**
     * Parse the hidden field's text. Returns {preset, error}: `error` is a message when the
     * text is not a JSON object or is too broken to draw (the Python validator, which the panel
     * shows under the editor, is the complete check).
     */
    function parse(text) {
        var obj;
        try {
            obj = JSON.parse(text);
        } catch (e) {
            return {preset: null, error: "not valid JSON: " + e.message};
        }
        if (!isObject(obj)) return {preset: null, error: "the configuration must be a JSON object"};
        var problems = [];
        if (obj.version !== 1) problems.push("version must be 1");
        if (obj.regions !== undefined && !Array.isArray(obj.regions)) problems.push("regions must be a list");
        (Array.isArray(obj.regions) ? obj.regions : []).forEach(function(r, i) {
            if (!isObject(r) || ["x", "y", "width", "height"].some(function(k) { return typeof r[k] !== "number"; })) {
                problems.push("regions[" + i + "] needs numeric x, y, width and height");
            }
        });
        if (obj.canvas !== undefined && !(isObject(obj.canvas) && obj.canvas.width > 0 && obj.canvas.height > 0)) {
            problems.push("canvas needs a positive width and height");
        }
        ["tiles", "upscale", "vae"].forEach(function(k) {
            if (obj[k] !== undefined && obj[k] !== null && !isObject(obj[k])) problems.push(k + " must be an object");
        });
        return {preset: obj, error: problems.length ? problems.join("; ") : null};
    }

    function modeOf(preset) {
        var hasTiles = !!(preset && preset.tiles), hasRegions = !!(preset && preset.regions && preset.regions.length);
        return hasTiles && hasRegions ? "both" : hasTiles ? "tiles" : "regions";
    }

    /** Region boxes in px of the view canvas (the preset's boxes may be fractions or for another canvas size). */
    function regionScale(preset, view) {
        if (preset.units === "fraction") return {x: view.width, y: view.height};
        if (preset.canvas) return {x: view.width / preset.canvas.width, y: view.height / preset.canvas.height};
        return {x: 1, y: 1};
    }

    function viewBoxes(preset, view) {
        var s = regionScale(preset, view);
        return (preset.regions || []).map(function(r) {
            return {x: r.x * s.x, y: r.y * s.y, width: r.width * s.x, height: r.height * s.y};
        });
    }

    /** Snapped boxes as the engine will use them on the view canvas. */
    function snappedBoxes(preset, view) {
        return viewBoxes(preset, view).map(function(b) {
            return snapBox(b.x, b.y, b.width, b.height, view.width, view.height);
        });
    }

    // ------------------------------------------------------------------ the state reducer

    /**
     * The editor's state: {preset (the decoded JSON), error, view {width, height}, selected,
     * mode, upscaleChoice, stash {tiles, regions, upscale}}. The preset is the whole generation
     * state (the hidden field); mode, upscaleChoice and stash are the panel's memory of a choice
     * the JSON cannot hold ("both" before the first region, "scale" for a scale of 2) and of
     * what a switch took away (the grid, the regions, the upscale section).
     */
    function initialState(view) {
        var preset = canonical({version: 1, name: "tile grid", tiles: Object.assign({}, DEFAULT_TILES)});
        return {preset: preset, error: null, view: canvasSize((view || {}).width || 512, (view || {}).height || 512),
            selected: -1, mode: "tiles", upscaleChoice: "off", stash: emptyStash()};
    }

    function emptyStash() {
        return {tiles: null, regions: null, upscale: null};
    }

    function assign(a, b) {
        return Object.assign({}, a, b);
    }

    /**
     * Before an edit: region boxes into px of the view canvas, snapped as the engine snaps
     * them there (so the engine's result does not change), and `canvas` set to the view.
     */
    function normalise(preset, view) {
        var p = canonical(preset);
        var sameCanvas = p.units === "px" && p.canvas && p.canvas.width === view.width && p.canvas.height === view.height;
        if (sameCanvas) return p;
        var noCanvasPx = p.units === "px" && !p.canvas;
        var s = regionScale(p, view);
        p.regions = p.regions.map(function(r) {
            if (noCanvasPx) return r; // already px of the generation's canvas
            var b = snapBox(r.x * s.x, r.y * s.y, r.width * s.x, r.height * s.y, view.width, view.height);
            return assign(r, b);
        });
        p.units = "px";
        p.canvas = {width: view.width, height: view.height};
        return p;
    }

    function cleanNumber(value, lo, hi, fallback, opts) {
        opts = opts || {};
        if (value === "" || value === null || value === undefined) return opts.nullable ? null : fallback;
        var v = typeof value === "number" ? value : Number(String(value).trim());
        if (!isFinite(v)) return fallback;
        if (opts.integer) v = Math.round(v);
        if (opts.loOpen && v <= lo) return fallback;
        return clamp(v, lo, hi);
    }

    /** A tile side from the panel: "auto", 0 (a slider's auto, as the VAE tile's 0 is null) or not a number is auto; else px on the 8 px grid. */
    function cleanTileSide(value) {
        var v = value === AUTO ? 0 : cleanNumber(value, 0, MAX_SIDE, 0);
        return v < 1 ? AUTO : clamp(roundTo(v), TILE_MIN, MAX_SIDE);
    }

    /**
     * The tile grid from the panel's values. The sides are both "auto" or both px (parse_preset
     * refuses a mix): the one set last, `lead` ("width" or "height"; default width), decides for
     * both, so a slider set to 0 makes both auto and one moved off 0 gives the other its size.
     */
    function cleanTiles(t, lead) {
        var width = cleanTileSide(t.width), height = cleanTileSide(t.height);
        if ((width === AUTO) !== (height === AUTO)) {
            if (lead === "height") width = height;
            else height = width;
        }
        var side = function(v) { return v === AUTO ? MAX_SIDE : v; };
        var o = overlapOf(t), limit = Math.max(Math.min(side(width), side(height)) - LATENT, 0);
        var ox = clamp(nearest(cleanNumber(o.x, 0, MAX_SIDE, DEFAULT_TILES.overlap)), 0, limit);
        var oy = clamp(nearest(cleanNumber(o.y, 0, MAX_SIDE, DEFAULT_TILES.overlap)), 0, limit);
        var batch = t.batch_size === AUTO ? 0 : cleanNumber(t.batch_size, 0, MAX_BATCH, 0, {integer: true});
        return keepUnknown({width: width, height: height, overlap: ox === oy ? ox : {x: ox, y: oy},
            batch_size: batch < 1 ? AUTO : batch}, t);
    }

    /** A side of an upscale target: px, multiple of 8, in [64, 16384]. */
    function cleanSide(value, fallback) {
        return clamp(roundTo(cleanNumber(value, MIN_SIDE, MAX_SIDE, fallback)), MIN_SIDE, MAX_SIDE);
    }

    /**
     * `base` (an upscale section, or the default) with the fields of `change`; a width or a
     * height replaces the scale and a scale the size (the canonical form has one of them).
     */
    function cleanUpscale(base, change) {
        var u = upscaleSettings(isObject(base) ? base : DEFAULT_UPSCALE), c = change || {};
        if (typeof c.upscaler === "string" && c.upscaler.trim()) u.upscaler = c.upscaler.trim().slice(0, 200);
        if (FITS.indexOf(c.fit) >= 0) u.fit = c.fit;
        if (c.guide_strength !== undefined) u.guide_strength = cleanNumber(c.guide_strength, 0, 1, u.guide_strength);
        if (typeof c.controlnet_tile === "string") u.controlnet_tile = c.controlnet_tile.trim().slice(0, 200);
        if (c.width != null || c.height != null) {
            u.width = cleanSide(c.width != null ? c.width : u.width, DEFAULT_UPSCALE_SIZE.width);
            u.height = cleanSide(c.height != null ? c.height : u.height, DEFAULT_UPSCALE_SIZE.height);
            delete u.scale;
        } else if (c.scale != null) {
            var fallback = u.scale === undefined ? DEFAULT_UPSCALE.scale : u.scale;
            u.scale = cleanNumber(c.scale, 0, MAX_SCALE, fallback, {loOpen: true});
            delete u.width;
            delete u.height;
        }
        return upscaleSettings(u);
    }

    /** VAE tile edge: 0, empty or not a number = null (chosen from free memory); else 64..4096 px on the 8 px grid. */
    function cleanVaeTile(value) {
        var v = cleanNumber(value, 0, VAE_TILE.max, 0);
        return v < 1 ? null : clamp(roundTo(v), VAE_TILE.min, VAE_TILE.max);
    }

    /**
     * The panel's Upscale target for a section: `preferred` while it still describes the
     * section (so "scale" stays "scale" at 2), else the first choice that does.
     */
    function upscaleChoice(upscale, preferred) {
        var u = isObject(upscale) ? upscaleSettings(upscale) : null;
        var describes = function(choice) {
            if (!u) return choice === "off";
            var sized = u.width !== undefined || u.height !== undefined, t = UPSCALE_PRESETS[choice];
            if (choice === "scale" || choice === "size") return sized === (choice === "size");
            if (!t) return false;
            return t.scale !== undefined ? !sized && u.scale === t.scale : u.width === t.width && u.height === t.height;
        };
        return preferred && describes(preferred) ? preferred : UPSCALE_CHOICES.filter(describes)[0];
    }

    /** The Upscaler dropdown after a change of the JSON `text`: its upscaler when the WebUI has it (`names`), else `current`. */
    function upscalerOf(text, current, names) {
        var obj;
        try {
            obj = JSON.parse(text);
        } catch (e) {
            return current;
        }
        var name = isObject(obj) && isObject(obj.upscale) ? obj.upscale.upscaler : null;
        return typeof name === "string" && (names || []).indexOf(name) >= 0 ? name : current;
    }

    function withUpscaleChoice(state, preferred) {
        return assign(state, {upscaleChoice: upscaleChoice(state.preset.upscale, preferred || state.upscaleChoice)});
    }

    function newRegion(box) {
        return fullRegion({x: box.x, y: box.y, width: box.width, height: box.height});
    }

    function withRegions(state, regions, selected, extra) {
        var p = normalise(state.preset, state.view);
        p.regions = regions(p.regions);
        var mode = state.mode;
        if (p.regions.length && mode === "tiles") mode = p.tiles ? "both" : "regions";
        return assign(state, assign({preset: p, selected: selected === undefined ? state.selected : selected, mode: mode,
            error: null}, extra || {}));
    }

    function regionIndexOk(state, i) {
        return Number.isInteger(i) && i >= 0 && i < ((state.preset && state.preset.regions) || []).length;
    }

    /** The pure state transition for one editor action. */
    function reduce(state, action) {
        var s = state || initialState();
        var p, i;
        switch (action.type) {
        case "load": {
            var got = parse(action.text);
            if (!got.preset || got.error) return assign(s, {error: got.error});
            var n = Array.isArray(got.preset.regions) ? got.preset.regions.length : 0;
            return assign(s, {preset: got.preset, error: null, mode: modeOf(got.preset),
                selected: s.selected < n ? s.selected : n - 1, stash: emptyStash(),
                upscaleChoice: upscaleChoice(got.preset.upscale, s.upscaleChoice)});
        }
        case "view":
            return assign(s, {view: canvasSize(action.width, action.height)});
        case "select":
            return assign(s, {selected: regionIndexOk(s, action.index) ? action.index : -1});
        case "add": {
            var box = snapBox(action.box.x, action.box.y, action.box.width, action.box.height, s.view.width, s.view.height);
            var region = assign(newRegion(box), action.fields || {});
            return withRegions(s, function(rs) { return rs.concat([region]); }, s.preset.regions ? s.preset.regions.length : 0);
        }
        case "setBox": {
            if (!regionIndexOk(s, action.index)) return s;
            var b = snapBox(action.box.x, action.box.y, action.box.width, action.box.height, s.view.width, s.view.height);
            return withRegions(s, function(rs) {
                return rs.map(function(r, j) { return j === action.index ? assign(r, b) : r; });
            }, action.index);
        }
        case "nudge": {
            if (!regionIndexOk(s, action.index)) return s;
            var cur = normalise(s.preset, s.view).regions[action.index];
            var moved = moveBox(snapBox(cur.x, cur.y, cur.width, cur.height, s.view.width, s.view.height),
                action.dx, action.dy, s.view.width, s.view.height);
            return reduce(s, {type: "setBox", index: action.index, box: moved});
        }
        case "delete":
            if (!regionIndexOk(s, action.index)) return s;
            return withRegions(s, function(rs) { return rs.filter(function(r, j) { return j !== action.index; }); },
                Math.min(action.index, s.preset.regions.length - 2));
        case "duplicate": {
            if (!regionIndexOk(s, action.index)) return s;
            var src = normalise(s.preset, s.view).regions[action.index];
            var dup = moveBox(snapBox(src.x, src.y, src.width, src.height, s.view.width, s.view.height), 32, 32, s.view.width, s.view.height);
            return withRegions(s, function(rs) { return rs.concat([assign(rs[action.index], dup)]); }, s.preset.regions.length);
        }
        case "reorder": {
            // to: "forward" | "backward" | "front" | "back" (the last region is drawn on top)
            i = action.index;
            if (!regionIndexOk(s, i)) return s;
            var count = s.preset.regions.length;
            var to = action.to === "forward" ? i + 1 : action.to === "backward" ? i - 1 : action.to === "front" ? count - 1 : 0;
            to = clamp(to, 0, count - 1);
            if (to === i) return s;
            return withRegions(s, function(rs) {
                var copy = rs.slice(), item = copy.splice(i, 1)[0];
                copy.splice(to, 0, item);
                return copy;
            }, to);
        }
        case "updateRegion": {
            if (!regionIndexOk(s, action.index)) return s;
            var f = action.fields, clean = {};
            if ("prompt" in f) clean.prompt = String(f.prompt);
            if ("negative_prompt" in f) clean.negative_prompt = String(f.negative_prompt);
            if ("prompt_mode" in f && PROMPT_MODES.indexOf(f.prompt_mode) >= 0) clean.prompt_mode = f.prompt_mode;
            if ("cfg_scale" in f) clean.cfg_scale = cleanNumber(f.cfg_scale, 0, 100, null, {nullable: true});
            if ("weight" in f) clean.weight = cleanNumber(f.weight, 0, 1000, 1, {loOpen: true});
            if ("seed" in f) clean.seed = cleanNumber(f.seed, -1, SEED_MAX, -1, {integer: true, nullable: false});
            p = canonical(s.preset);
            p.regions = p.regions.map(function(r, j) { return j === action.index ? assign(r, clean) : r; });
            return assign(s, {preset: p});
        }
        case "mode": {
            if (MODES.indexOf(action.mode) < 0) return s;
            p = canonical(s.preset);
            var stash = assign(s.stash, {});
            var tiles = action.tiles ? cleanTiles(action.tiles) : null;
            if (action.mode === "tiles" || action.mode === "both") {
                if (!p.tiles) p.tiles = tiles || stash.tiles || Object.assign({}, DEFAULT_TILES);
            } else if (p.tiles) {
                stash.tiles = p.tiles;
                delete p.tiles;
            }
            if (action.mode === "tiles") {
                if (p.regions.length) stash.regions = p.regions;
                p.regions = [];
            } else if (!p.regions.length && stash.regions) {
                p.regions = stash.regions;
                stash.regions = null;
            }
            var sel = p.regions.length ? clamp(s.selected, -1, p.regions.length - 1) : -1;
            return assign(s, {preset: canonical(p), mode: action.mode, stash: stash, selected: sel});
        }
        case "tiles": {
            // a partial update of the grid: {width, height, overlap, batch_size}
            var base = s.preset.tiles || s.stash.tiles || DEFAULT_TILES;
            var lead = "height" in action.tiles && !("width" in action.tiles) ? "height" : "width";
            var merged = cleanTiles(assign(tileSettings(base), action.tiles), lead);
            if (!s.preset.tiles) return assign(s, {stash: assign(s.stash, {tiles: merged})});
            p = canonical(s.preset);
            p.tiles = merged;
            return assign(s, {preset: p});
        }
        case "weights": {
            p = canonical(s.preset);
            var w = weightSettings(p.weights);
            if (KINDS.indexOf(action.kind) >= 0) w.kind = action.kind;
            if (action.variance !== undefined) w.variance = cleanNumber(action.variance, 0, 10, w.variance, {loOpen: true});
            p.weights = w;
            return assign(s, {preset: p});
        }
        case "passes":
            if (PASSES.indexOf(action.passes) < 0) return s;
            p = canonical(s.preset);
            p.passes = action.passes;
            return assign(s, {preset: p});
        case "upscale":
            // set the upscale section (sizing, fit...), turning it on; null turns it off
            p = canonical(s.preset);
            if (action.upscale === null) {
                var kept = p.upscale || s.stash.upscale;
                delete p.upscale;
                return withUpscaleChoice(assign(s, {preset: p, stash: assign(s.stash, {upscale: kept})}), "off");
            }
            p.upscale = cleanUpscale(p.upscale || s.stash.upscale, action.upscale);
            return withUpscaleChoice(assign(s, {preset: p}), action.choice);
        case "upscaleOptions":
            // edit the section's fields; while it is off they wait in the stash for the next "upscale"
            if (!s.preset.upscale) return assign(s, {stash: assign(s.stash, {upscale: cleanUpscale(s.stash.upscale, action.upscale)})});
            p = canonical(s.preset);
            p.upscale = cleanUpscale(p.upscale, action.upscale);
            return withUpscaleChoice(assign(s, {preset: p}), action.choice);
        case "vae": {
            p = canonical(s.preset);
            var vae = vaeSettings(p.vae);
            if (VAE_TILING.indexOf(action.tiling) >= 0) vae.tiling = action.tiling;
            if ("tile" in action) vae.tile = cleanVaeTile(action.tile);
            p.vae = vae;
            return assign(s, {preset: canonical(p)});
        }
        case "name":
            p = canonical(s.preset);
            p.name = String(action.name || "").slice(0, MAX_NAME);
            return assign(s, {preset: p});
        default:
            return s;
        }
    }

    var api = {
        FIELDS: FIELDS, field: field, fieldTitle: fieldTitle, LATENT: LATENT, MAX_SIDE: MAX_SIDE, DEFAULT_TILES: DEFAULT_TILES, DEFAULT_VARIANCE: DEFAULT_VARIANCE,
        DEFAULT_BATCH_SIZE: DEFAULT_BATCH_SIZE, COST_MODEL: COST_MODEL, COST_MODELS: COST_MODELS, MODES: MODES, PASSES: PASSES, KINDS: KINDS,
        AUTO: AUTO, GIB: GIB, costModel: costModel, editorBudget: editorBudget, resolveAuto: resolveAuto, planOn: planOn,
        rank: rank, within: within, tileGrids: tileGrids, stepCost: stepCost, tileProblems: tileProblems, show: show, pyFixed: pyFixed,
        nearest: nearest, roundTo: roundTo, clamp: clamp, snapBox: snapBox, canvasSize: canvasSize,
        planAxis: planAxis, planTiles: planTiles, tileCount: tileCount, MAX_CROPS: MAX_CROPS, modelCallsPerStep: modelCallsPerStep, buildPlan: buildPlan,
        planSummary: planSummary, profile: profile, weightField: weightField, normalisedWeightAt: normalisedWeightAt,
        estimateCost: estimateCost, hiresSize: hiresSize,
        hitTest: hitTest, handlePoints: handlePoints, boxFromDrag: boxFromDrag, moveBox: moveBox, resizeBox: resizeBox,
        canonical: canonical, fullRegion: fullRegion, serialise: serialise, parse: parse, modeOf: modeOf, viewBoxes: viewBoxes,
        snappedBoxes: snappedBoxes, normalise: normalise, tileSettings: tileSettings, weightSettings: weightSettings,
        initialState: initialState, reduce: reduce,
        FITS: FITS, VAE_TILING: VAE_TILING, DEFAULT_UPSCALE: DEFAULT_UPSCALE, UPSCALE_PRESETS: UPSCALE_PRESETS,
        UPSCALE_CHOICES: UPSCALE_CHOICES, upscaleSettings: upscaleSettings, vaeSettings: vaeSettings, upscaleChoice: upscaleChoice, upscalerOf: upscalerOf,
        targetSize: targetSize, fitGeometry: fitGeometry, upscaleTarget: upscaleTarget, pyRound: pyRound, formatG: formatG,
    };
    if (typeof module !== "undefined" && module.exports) module.exports = api;
    else root.MoDCore = api;
})(typeof window !== "undefined" ? window : this);
