/*
 * Mixture of Diffusers, region editor: the canvas. It draws the generation's canvas at its
 * aspect ratio (the img2img source image under it, placed as the upscale places it), a heat map
 * of the normalised weights (hatched red where no crop reaches a latent pixel), the tile grid of
 * the pass shown ("auto" sizes as the job chooses them), and the regions with their labels and
 * resize handles; then it has the text around the canvas (mixture_of_diffusers_editor_panel.js)
 * brought up to date.
 *
 * Load order: none needed (the WebUI loads javascript/*.js as classic scripts in sorted name
 * order). This file only registers its part, HANDLE and rgb() at load time; MoDCore and the
 * page helpers of mixture_of_diffusers.js are reached when the methods run.
 */
(function() {
    "use strict";

    var E = window.MoDEditor = window.MoDEditor || {parts: {}};
    var part = E.parts.canvas = {};
    var MAX_CANVAS_HEIGHT = 460; // css px
    var HANDLE = 5; // css px, half the size of a resize handle
    var PALETTE = [[230, 76, 60], [52, 152, 219], [46, 204, 113], [241, 196, 15], [155, 89, 182], [26, 188, 156],
        [230, 126, 34], [236, 64, 122], [52, 73, 94], [127, 140, 141], [192, 57, 43], [41, 128, 185]];
    var TILE_COLOURS = [[96, 125, 139], [144, 164, 174], [120, 144, 156], [176, 190, 197]];

    function cssVar(el, name, fallback) {
        var v = getComputedStyle(el).getPropertyValue(name);
        return v && v.trim() ? v.trim() : fallback;
    }

    function rgb(c, a) {
        return "rgba(" + c[0] + "," + c[1] + "," + c[2] + "," + (a === undefined ? 1 : a) + ")";
    }

    E.HANDLE = HANDLE; // the pointer's hit test grabs a handle a little beyond its drawn size
    E.rgb = rgb;

    part.colourOf = function(i) {
        return PALETTE[i % PALETTE.length];
    };

    /** Which pass's tile grid the canvas shows: the hires pass's unless only the first is mixed or the user picks it. */
    part.gridPassShown = function() {
        var p = this.state.preset.passes || "both";
        if (!this.hiresView || p === "first") return "first";
        if (this.gridPass === "first" || this.gridPass === "hires") return this.gridPass;
        return "hires";
    };

    part.render = function() {
        var cs = getComputedStyle(this.stage);
        var cssW = this.stage.clientWidth - (parseFloat(cs.paddingLeft) || 0) - (parseFloat(cs.paddingRight) || 0);
        if (!(cssW > 0)) return; // hidden (closed accordion, other tab): the ResizeObserver calls again
        var v = this.state.view, W = v.width, H = v.height;
        var k = Math.min(cssW / W, MAX_CANVAS_HEIGHT / H);
        var dw = Math.max(1, Math.round(W * k)), dh = Math.max(1, Math.round(H * k)), dpr = window.devicePixelRatio || 1;
        this.k = k;
        if (this.canvas.width !== Math.round(dw * dpr) || this.canvas.height !== Math.round(dh * dpr)) {
            this.canvas.width = Math.round(dw * dpr);
            this.canvas.height = Math.round(dh * dpr);
        }
        this.canvas.style.width = dw + "px";
        this.canvas.style.height = dh + "px";
        var ctx = this.canvas.getContext("2d");
        ctx.setTransform(dpr * k, 0, 0, dpr * k, 0, 0);
        var colours = {
            text: cssVar(this.host, "--body-text-color", "#222"),
            bg: cssVar(this.host, "--background-fill-secondary", "#eee"),
            accent: cssVar(this.host, "--color-accent", "#ff7c00"),
            panel: cssVar(this.host, "--block-background-fill", "#fff"),
        };
        ctx.clearRect(0, 0, W, H);
        ctx.fillStyle = colours.bg;
        ctx.fillRect(0, 0, W, H);
        var img = this.tab === "img2img" ? E.sourceImage() : null;
        if (img) this.drawSource(ctx, img, W, H);

        var preset = this.previewPreset(), px = 1 / k;
        var passShown = this.gridPassShown();
        var hv = passShown === "hires" ? this.hiresView : null;
        var planW = hv ? hv.width : W, planH = hv ? hv.height : H, scale = W / planW;
        // "auto" sizes as the job chooses them: once, on the largest pass it mixes, for every pass
        var job = this.resolveJob(preset), planned = job.problems ? null : job.preset;
        var plan = planned ? MoDCore.buildPlan(planned, planW, planH) : {problems: job.problems};
        if (!plan.problems) this.drawHeat(ctx, plan, W, H, img ? 0.5 : 0.85);
        else this.uncovered = 0;
        var tiles = plan.problems ? this.tilesOnly(planned || preset, planW, planH) : plan.tiles;
        if (tiles) {
            ctx.lineWidth = px;
            ctx.setLineDash([4 * px, 3 * px]);
            ctx.strokeStyle = "rgba(0,0,0,0.55)";
            tiles.tiles.forEach(function(t) { ctx.strokeRect(t.x * scale, t.y * scale, t.width * scale, t.height * scale); });
            ctx.strokeStyle = "rgba(255,255,255,0.6)";
            ctx.lineDashOffset = 3.5 * px;
            tiles.tiles.forEach(function(t) { ctx.strokeRect(t.x * scale, t.y * scale, t.width * scale, t.height * scale); });
            ctx.setLineDash([]);
            ctx.lineDashOffset = 0;
        }
        this.drawRegions(ctx, preset, k, colours);
        if (this.state.error) {
            ctx.fillStyle = "rgba(0,0,0,0.55)";
            ctx.fillRect(0, 0, W, H);
        }
        this.renderReadout(preset);
        this.renderUpscaleNote();
        if (!this.drag) this.renderFields(false);
        this.renderList();
        this.renderStats(job);
        this.renderMessage();
        this.gridPickWrap.hidden = !(this.hiresView && (this.state.preset.passes || "both") !== "first");
        this.gridPick.value = passShown;
        this.host.setAttribute("data-regions", String((this.state.preset.regions || []).length));
        this.host.setAttribute("data-selected", String(this.state.selected));
    };

    /** The source image as the upscale places it on the target (cropped or padded), else over the whole canvas. */
    part.drawSource = function(ctx, img, W, H) {
        var up = this.upscaleInfo(), g = up && up.geometry;
        if (g && g.width === W && g.height === H) ctx.drawImage(img, g.x, g.y, g.resize_w, g.resize_h);
        else ctx.drawImage(img, 0, 0, W, H);
    };

    /** The tile grid alone, drawn when the whole preset has problems (a region off the canvas, say; none while "auto" is unresolved). */
    part.tilesOnly = function(preset, w, h) {
        if (!preset.tiles) return null;
        var p = MoDCore.buildPlan({version: 1, tiles: preset.tiles, regions: []}, w, h);
        return p.problems ? null : p.tiles;
    };

    part.drawHeat = function(ctx, plan, W, H, alpha) {
        var self = this, regionColours = [], tiles = plan.tiles;
        var cols = tiles ? tiles.columns.starts.length : 1;
        plan.crops.forEach(function(c) {
            if (c.cond === "main") {
                var col = c.tile % cols, row = Math.floor(c.tile / cols);
                regionColours.push(TILE_COLOURS[(row % 2) * 2 + (col % 2)]);
            } else {
                regionColours.push(self.colourOf(c.cond));
            }
        });
        var key = JSON.stringify([plan.width, plan.height, plan.weights, plan.crops.map(function(c) {
            return [c.box.x, c.box.y, c.box.width, c.box.height, c.weight];
        }), regionColours]);
        if (key !== this.heatKey) {
            var field = MoDCore.weightField(plan, regionColours);
            var hc = this.heatCanvas;
            hc.width = field.width;
            hc.height = field.height;
            var hctx = hc.getContext("2d"), data = hctx.createImageData(field.width, field.height);
            for (var i = 0, n = field.width * field.height; i < n; i++) {
                var o = 4 * i;
                if (field.total[i] > 0) {
                    data.data[o] = field.rgb[3 * i];
                    data.data[o + 1] = field.rgb[3 * i + 1];
                    data.data[o + 2] = field.rgb[3 * i + 2];
                    data.data[o + 3] = 255;
                } else { // no crop reaches this latent pixel: hatched red
                    var x = i % field.width, y = Math.floor(i / field.width);
                    data.data[o] = 220; data.data[o + 1] = 38; data.data[o + 2] = 38;
                    data.data[o + 3] = (x + y) % 4 < 2 ? 200 : 70;
                }
            }
            hctx.putImageData(data, 0, 0);
            this.heatKey = key;
            this.uncovered = field.uncovered / (field.width * field.height);
        }
        ctx.save();
        ctx.globalAlpha = alpha;
        ctx.imageSmoothingEnabled = true;
        ctx.drawImage(this.heatCanvas, 0, 0, W, H);
        ctx.restore();
    };

    part.drawRegions = function(ctx, preset, k, colours) {
        var self = this, px = 1 / k, v = this.state.view, sel = this.state.selected, d = this.drag;
        var boxes = MoDCore.snappedBoxes(preset, v);
        ctx.font = (12 * px) + "px sans-serif";
        ctx.textBaseline = "top";
        boxes.forEach(function(b, i) {
            var c = self.colourOf(i), selected = i === sel || (d && d.kind === "create" && d.moved && i === boxes.length - 1);
            ctx.lineWidth = (selected ? 3 : 2) * px;
            ctx.strokeStyle = "rgba(0,0,0,0.6)";
            ctx.strokeRect(b.x + px, b.y + px, b.width - 2 * px, b.height - 2 * px);
            ctx.strokeStyle = rgb(c);
            ctx.strokeRect(b.x, b.y, b.width, b.height);
            var label = (i + 1) + (preset.regions[i].prompt ? " " + E.excerpt(preset.regions[i].prompt, 28) : "");
            var tw = ctx.measureText(label).width + 8 * px;
            ctx.fillStyle = rgb(c, 0.9);
            ctx.fillRect(b.x, b.y, Math.min(tw, Math.max(b.width, 18 * px)), 16 * px);
            ctx.fillStyle = "#fff";
            ctx.save();
            ctx.beginPath();
            ctx.rect(b.x, b.y, Math.max(b.width, 18 * px), 16 * px);
            ctx.clip();
            ctx.fillText(label, b.x + 4 * px, b.y + 2 * px);
            ctx.restore();
            if (selected) {
                var pts = MoDCore.handlePoints(b);
                Object.keys(pts).forEach(function(h) {
                    var p = pts[h];
                    ctx.fillStyle = colours.panel;
                    ctx.fillRect(p[0] - HANDLE * px, p[1] - HANDLE * px, 2 * HANDLE * px, 2 * HANDLE * px);
                    ctx.lineWidth = 1.5 * px;
                    ctx.strokeStyle = rgb(c);
                    ctx.strokeRect(p[0] - HANDLE * px, p[1] - HANDLE * px, 2 * HANDLE * px, 2 * HANDLE * px);
                });
            }
        });
        if (d && d.moved && d.box) {
            ctx.setLineDash([6 * px, 4 * px]);
            ctx.lineWidth = 1.5 * px;
            ctx.strokeStyle = colours.accent;
            ctx.strokeRect(d.box.x, d.box.y, d.box.width, d.box.height);
            ctx.setLineDash([]);
        }
    };
})();
