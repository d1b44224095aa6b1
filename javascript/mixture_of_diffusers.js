/*
 * Mixture of Diffusers: the panel's region editor and its link to the WebUI.
 *
 * The whole configuration is the preset JSON in the panel's textbox (#mod_<tab>_config). This
 * script draws it on a canvas (tile grid, regions, a heat map of the normalised weights), lets
 * the user edit it with the mouse and keyboard, keeps the panel's gradio controls and the JSON
 * in step both ways, and writes the JSON back with the WebUI's updateInput(). The pure parts
 * (geometry, planner, reducer) are in mixture_of_diffusers_core.js (MoDCore).
 *
 * Globals: `MoD` only (the WebUI's gradio event for the JSON calls MoD.configChanged).
 */
(function() {
    "use strict";

    var TABS = ["txt2img", "img2img"];
    var POLL_MS = 400;
    var PUSH_DELAY_MS = 300;
    var MAX_CANVAS_HEIGHT = 460; // css px
    var HANDLE = 5; // css px, half the size of a resize handle
    var UPSCALE_GRID = {width: 768, height: 768, overlap: 128, batch_size: 4}; // presets/upscale-*.json
    var UPSCALE_TARGETS = {up2x: null, upqhd: [2560, 1440], up4k: [3840, 2160]};
    // img2img: the buttons set the preset's upscale section to these Upscale target choices
    var UPSCALE_BUTTON_CHOICES = {up2x: "2x", upqhd: "QHD 2560\u00d71440", up4k: "4K UHD 3840\u00d72160"};
    var PALETTE = [[230, 76, 60], [52, 152, 219], [46, 204, 113], [241, 196, 15], [155, 89, 182], [26, 188, 156],
        [230, 126, 34], [236, 64, 122], [52, 73, 94], [127, 140, 141], [192, 57, 43], [41, 128, 185]];
    var TILE_COLOURS = [[96, 125, 139], [144, 164, 174], [120, 144, 156], [176, 190, 197]];
    var TITLES = {
        up2x: "Upscale 2x: txt2img turns on hires fix at 2x; img2img sets the Upscale section to scale 2 (the source image upscaled once, " +
            "then refined in tiles); sets a 768 px tile grid with 128 px overlap",
        upqhd: "QHD 2560x1440: txt2img draws 1280x720 and hires-fixes it 2x; img2img sets the Upscale section to 2560x1440, fit crop " +
            "(any source, cropped to fill); sets a 768 px tile grid with 128 px overlap",
        up4k: "4K UHD 3840x2160: txt2img draws 1920x1080 and hires-fixes it 2x; img2img sets the Upscale section to 3840x2160, fit crop " +
            "(any source, cropped to fill); sets a 768 px tile grid with 128 px overlap",
        upscaler: "img2img: the WebUI upscaler that resizes the source image once before the tiled refinement (upscale.upscaler); " +
            "ESRGAN-type models upscale by 4 per pass, then Lanczos fits the size",
        upscale_target: "off: no upscale. 2x: twice the source. QHD / 4K UHD: 2560x1440 / 3840x2160 whatever the source. scale: the Scale " +
            "field. size: Width x Height. The editor's canvas shows the target.",
        upscale_scale: "Times the source size, 0.05 to 16 (target: scale). Each side is rounded to the nearest 8 px and must land in " +
            "64 to 16384 px.",
        upscale_width: "Target width for target: size, 64 to 16384 px, snapped to 8 px",
        upscale_height: "Target height for target: size, 64 to 16384 px, snapped to 8 px",
        upscale_fit: "A source of another aspect ratio: crop scales it to cover the target and cuts the overhang (centred); pad scales " +
            "it to fit inside and extends its edges outwards; stretch ignores the aspect ratio.",
        upscale_guide: "0 to 1: for this share of the model calls the upscaled image guides the whole canvas (keeps the composition " +
            "at high denoising strength); 0 turns it off.",
        vae_tiling: "Tiled VAE encode/decode for large images: auto tiles only when a plain pass would not fit in free GPU memory; " +
            "on always tiles; off never does.",
        vae_tile: "Core tile edge in image px: 0 chooses it from the free memory; else 64 to 4096, snapped to 8 px. Smaller tiles " +
            "need less memory and take longer; the result does not depend on it.",
        mode: "tiles: a grid of tiles driven by the main prompt (large images, upscaling). regions: your boxes, each with its own prompt; " +
            "every latent pixel needs one. both: the grid with your regions on top.",
        passes: "txt2img with hires fix: mix only the first pass, only the hires pass (upscaling), or both. Without hires fix only the first pass runs.",
        weighting: "gaussian: the paper's weights, highest in a crop's middle, so crops hand over smoothly. constant: a plain average where crops overlap.",
        variance: "Width of the gaussian, relative to each crop's size: 0.001 to 1 here (the preset allows up to 10); the paper uses 0.01.",
        tile_w: "Width of each background tile: 64 to 4096 px, snapped to 8 px (one latent cell), clamped to the canvas.",
        tile_h: "Height of each background tile: 64 to 4096 px, snapped to 8 px, clamped to the canvas.",
        overlap: "The smallest overlap between neighbouring tiles: 0 px up to the tile size minus 8, snapped to 8 px. The planner takes " +
            "the fewest tiles that overlap at least this much and spreads them evenly, so real overlaps (shown under the editor) can be larger.",
        batch: "Crops per model call, 1 to 64: speed and memory only, the image does not change. Regions without a tile grid use 4.",
        preset: "bundled/: presets that come with the extension (the paper's layouts, upscaling grids). user/: yours, kept in the WebUI's " +
            "data folder (mixture_of_diffusers_presets), safe across updates of the extension.",
        save_name: "Name for Save: letters, digits, spaces and . , ( ) + - _, at most 80 characters.",
        refresh: "Read the presets folder again",
        load: "Load the chosen preset into the panel (replaces the current configuration)",
        save: "Save the current configuration as one of your presets under the name on the left; asks before replacing one",
        "delete": "Delete the chosen preset (only your own, user/...); asks first",
        "import": "Load a preset from a JSON file (validated)",
        "export": "Download the current configuration as a JSON file",
        confirm_yes: "Go ahead", confirm_no: "Leave everything as it is",
    };

    var editors = {};

    function app() {
        return typeof gradioApp === "function" ? gradioApp() : document;
    }

    function q(selector, root) {
        return (root || app()).querySelector(selector);
    }

    function num(id) {
        var el = q("#" + id + " input[type=number]") || q("#" + id + " input");
        if (!el) return null;
        var v = parseFloat(el.value);
        return isFinite(v) ? v : null;
    }

    function push(el) {
        if (typeof updateInput === "function") updateInput(el);
        else el.dispatchEvent(new Event("input", {bubbles: true}));
    }

    function setNumber(id, value) {
        var el = q("#" + id + " input[type=number]");
        if (!el || parseFloat(el.value) === value) return false;
        el.value = value;
        push(el);
        return true;
    }

    function setRadio(id, value) {
        var el = q("#" + id + " input[type=radio][value=\"" + value + "\"]");
        if (!el || el.checked) return;
        el.checked = true;
        el.dispatchEvent(new Event("change", {bubbles: true}));
    }

    function checked(selector) {
        var el = q(selector);
        return !!(el && el.checked);
    }

    function isObject(v) {
        return v !== null && typeof v === "object" && !Array.isArray(v);
    }

    function make(tag, attrs, children) {
        var el = document.createElement(tag);
        Object.keys(attrs || {}).forEach(function(k) {
            if (k === "text") el.textContent = attrs[k];
            else if (k === "className") el.className = attrs[k];
            else el.setAttribute(k, attrs[k]);
        });
        (children || []).forEach(function(c) { el.appendChild(c); });
        return el;
    }

    function cssVar(el, name, fallback) {
        var v = getComputedStyle(el).getPropertyValue(name);
        return v && v.trim() ? v.trim() : fallback;
    }

    function rgb(c, a) {
        return "rgba(" + c[0] + "," + c[1] + "," + c[2] + "," + (a === undefined ? 1 : a) + ")";
    }

    function gib(bytes) {
        return (bytes / Math.pow(2, 30)).toFixed(1) + " GiB";
    }

    function excerpt(text, n) {
        text = (text || "").replace(/\s+/g, " ").trim();
        return text.length > n ? text.slice(0, n - 1) + "\u2026" : text;
    }

    /** The img2img source image shown under the editor (the WebUI's own lookup), if any. */
    function sourceImage() {
        var img = q("#mode_img2img > div[style=\"display: block;\"] img") || q("#img2img_image img");
        return img && img.complete && img.naturalWidth > 0 ? img : null;
    }

    // ------------------------------------------------------------------ the editor of one tab

    function Editor(tab, host) {
        this.tab = tab;
        this.host = host;
        this.drag = null;
        this.syncing = false;
        this.pushTimer = null;
        this.heatKey = null;
        this.heatCanvas = document.createElement("canvas");
        this.lastText = null;
        this.hiresView = null;
        this.gridPass = "auto";
        this.build();
        var ta = this.textarea();
        this.state = MoDCore.initialState(this.readView().first);
        if (ta) this.load(ta.value);
        this.refreshView();
        this.syncControls();
        this.bindControls();
        this.render();
        var self = this;
        if (typeof ResizeObserver === "function") {
            this.resizeObserver = new ResizeObserver(function() { self.render(); });
            this.resizeObserver.observe(this.stage);
        }
        this.poller = setInterval(function() { self.poll(); }, POLL_MS);
    }

    Editor.prototype.id = function(name) {
        return "mod_" + this.tab + "_" + name;
    };

    Editor.prototype.textarea = function() {
        return q("#" + this.id("config") + " textarea");
    };

    Editor.prototype.build = function() {
        var self = this;
        this.host.innerHTML = "";
        this.host.classList.add("mod-ready");
        var button = function(act, label, title) {
            return make("button", {type: "button", className: "mod-btn", "data-act": act, title: title, text: label});
        };
        this.gridPick = make("select", {className: "mod-grid-pass", title: "Which pass's tile grid the canvas shows"}, [
            make("option", {value: "first", text: "first pass"}), make("option", {value: "hires", text: "hires pass"})]);
        this.gridPickWrap = make("label", {className: "mod-grid-pick", hidden: ""}, [make("span", {text: "Grid of the "}), this.gridPick]);
        this.toolbar = make("div", {className: "mod-toolbar"}, [
            button("add", "Add region", "Add a region in the middle of the canvas (or drag on empty space)"),
            button("duplicate", "Duplicate", "Copy the selected region, shifted by 32 px"),
            button("delete", "Delete", "Remove the selected region (Delete key)"),
            button("forward", "Bring forward", "Draw the selected region above the next one (Page Up)"),
            button("backward", "Send backward", "Draw the selected region below the previous one (Page Down)"),
            this.gridPickWrap,
        ]);
        this.canvas = make("canvas", {className: "mod-canvas", tabindex: "0", role: "application",
            "aria-label": "Region editor: drag on empty space (or Ctrl+drag anywhere) to draw a region, drag a region to move it, drag its handles to resize; " +
                "arrow keys move the selected region by 8 px (with Shift 64 px), Delete removes it"});
        this.stage = make("div", {className: "mod-stage"}, [this.canvas]);
        this.readout = make("div", {className: "mod-readout", "aria-live": "polite"});
        this.upscaleNote = make("div", {className: "mod-upscale-note", hidden: ""});
        this.fields = make("div", {className: "mod-fields", hidden: ""});
        var field = function(label, input, wide, title) {
            var l = make("label", {className: wide ? "mod-field mod-wide" : "mod-field", title: title}, [make("span", {text: label}), input]);
            self.fields.appendChild(l);
            return input;
        };
        ["x", "y", "width", "height"].forEach(function(k) {
            field(k === "width" ? "W" : k === "height" ? "H" : k.toUpperCase(),
                make("input", {type: "number", step: "8", min: "0", "data-box": k}), false,
                "Box " + k + " in px on the current canvas, snapped to 8 px");
        });
        field("Prompt", make("textarea", {rows: "2", "data-field": "prompt", placeholder: "empty: the main prompt"}), true,
            "The region's prompt; empty uses the main prompt");
        field("Negative prompt", make("textarea", {rows: "1", "data-field": "negative_prompt", placeholder: "empty: the main negative prompt"}), true,
            "The region's negative prompt; empty uses the main one");
        field("Prompt mode", make("select", {"data-field": "prompt_mode"}, [
            make("option", {value: "replace", text: "replace"}), make("option", {value: "append", text: "append"})]), false,
        "replace: the region prompt alone; append: the main prompt, then the region's");
        field("CFG scale", make("input", {type: "number", min: "0", max: "100", step: "0.5", "data-field": "cfg_scale", placeholder: "main"}), false,
            "The region's guidance scale, 0 to 100; empty uses the main CFG scale");
        field("Weight", make("input", {type: "number", min: "0.01", max: "1000", step: "0.1", "data-field": "weight"}), false,
            "Above 0, up to 1000 (default 1): above 1 the region wins where it overlaps others");
        field("Seed", make("input", {type: "number", min: "-1", max: "4294967295", step: "1", "data-field": "seed"}), false,
            "-1 keeps the canvas's noise; 0 to 4294967295 gives the region its own noise");
        this.list = make("ol", {className: "mod-list"});
        this.stats = make("div", {className: "mod-stats"});
        this.message = make("div", {className: "mod-message", hidden: ""});
        [this.toolbar, this.stage, this.readout, this.upscaleNote, this.fields, this.list, this.stats, this.message].forEach(function(el) {
            self.host.appendChild(el);
        });

        this.toolbar.addEventListener("click", function(e) {
            var b = e.target.closest("[data-act]");
            if (b) self.act(b.getAttribute("data-act"));
        });
        this.gridPick.addEventListener("change", function() {
            self.gridPass = self.gridPick.value;
            self.render();
        });
        this.canvas.addEventListener("pointerdown", function(e) { self.pointerDown(e); });
        this.canvas.addEventListener("pointermove", function(e) { self.pointerMove(e); });
        this.canvas.addEventListener("pointerup", function(e) { self.pointerUp(e, false); });
        this.canvas.addEventListener("pointercancel", function(e) { self.pointerUp(e, true); });
        this.canvas.addEventListener("keydown", function(e) { self.keyDown(e); });
        this.fields.addEventListener("input", function(e) { self.fieldInput(e, false); });
        this.fields.addEventListener("change", function(e) { self.fieldInput(e, true); });
        this.list.addEventListener("click", function(e) {
            var li = e.target.closest("[data-index]");
            if (!li) return;
            self.dispatch({type: "select", index: +li.getAttribute("data-index")});
            self.renderFields(true);
            self.render();
            self.canvas.focus({preventScroll: true});
        });
        this.message.addEventListener("click", function(e) {
            var b = e.target.closest("[data-act]");
            if (b) self.act(b.getAttribute("data-act"));
        });
    };

    // ---------------------------------------------------------------- state and the hidden JSON

    Editor.prototype.dispatch = function(action) {
        this.state = MoDCore.reduce(this.state, action);
        return this.state;
    };

    /** Commit: write the JSON into the textbox (updateInput tells gradio) and redraw. */
    Editor.prototype.commit = function(action, delayed) {
        if (action) this.dispatch(action);
        this.refreshView(); // an upscale section sets the canvas
        var self = this;
        clearTimeout(this.pushTimer);
        if (delayed) {
            this.pushTimer = setTimeout(function() { self.pushNow(); }, PUSH_DELAY_MS);
        } else {
            this.pushNow();
        }
        this.render();
    };

    Editor.prototype.pushNow = function() {
        clearTimeout(this.pushTimer);
        this.pushTimer = null;
        var ta = this.textarea();
        if (!ta || this.state.error) return;
        var text = MoDCore.serialise(this.state.preset);
        if (text === ta.value) {
            this.lastText = text;
            return;
        }
        this.lastText = text;
        ta.value = text;
        push(ta);
    };

    Editor.prototype.load = function(text) {
        this.lastText = text;
        this.dispatch({type: "load", text: text});
    };

    /** The JSON changed outside the editor (a preset, a paste, an edit of the text): follow it. */
    Editor.prototype.configChanged = function(text) {
        if (typeof text !== "string" || text === this.lastText) return;
        clearTimeout(this.pushTimer); // the new text wins over an edit not yet written
        this.pushTimer = null;
        this.load(text);
        this.refreshView(); // an upscale section sets the canvas
        this.syncControls();
        this.renderFields(true);
        this.render();
    };

    Editor.prototype.poll = function() {
        var ta = this.textarea();
        if (ta && ta.value !== this.lastText && !this.pushTimer) this.configChanged(ta.value);
        if (this.refreshView()) this.render();
        var img = this.tab === "img2img" ? sourceImage() : null;
        var src = img ? img.src : null;
        if (src !== this.imageSrc) {
            this.imageSrc = src;
            this.render();
        }
    };

    // ---------------------------------------------------------------- the WebUI's size controls

    /**
     * img2img with an upscale section: what it makes of the source image, as the engine will
     * ({source, upscaler, width, height, fit, geometry}, or {source, upscaler, error}); without
     * an image only a fixed size is known. Null without a section.
     */
    Editor.prototype.upscaleInfo = function() {
        var u = this.tab === "img2img" && this.state ? this.state.preset.upscale : null;
        if (!isObject(u)) return null;
        var s = MoDCore.upscaleSettings(u), img = sourceImage();
        if (img) {
            var w = img.naturalWidth, h = img.naturalHeight;
            return Object.assign({source: {width: w, height: h}, upscaler: s.upscaler}, MoDCore.upscaleTarget(u, w, h));
        }
        if (s.width && s.height) return {source: null, upscaler: s.upscaler, width: s.width, height: s.height, fit: s.fit};
        return {source: null, upscaler: s.upscaler, scale: s.scale};
    };

    /** The canvas the generation will have: first pass and (txt2img with hires fix) the hires pass. */
    Editor.prototype.readView = function() {
        var t = this.tab, w, h, hires = null, up = this.upscaleInfo();
        if (up && up.width && up.height) { // the upscale target replaces the WebUI's size
            w = up.width;
            h = up.height;
        } else if (t === "img2img") {
            var by = q("#img2img_tab_resize_by"), img = sourceImage();
            if (by && getComputedStyle(by).display !== "none" && img) {
                var scale = num("img2img_scale") || 1;
                w = Math.floor(img.naturalWidth * scale);
                h = Math.floor(img.naturalHeight * scale);
            }
        }
        if (!w || !h) {
            w = num(t + "_width") || 512;
            h = num(t + "_height") || 512;
        }
        var first = MoDCore.canvasSize(w, h);
        if (t === "txt2img" && (checked("#txt2img_hr-checkbox input") || checked("#txt2img_hr-visible-checkbox"))) {
            hires = MoDCore.hiresSize(first.width, first.height, num("txt2img_hr_scale") || 2,
                num("txt2img_hr_resize_x") || 0, num("txt2img_hr_resize_y") || 0);
        }
        return {first: first, hires: hires};
    };

    Editor.prototype.refreshView = function() {
        var v = this.readView(), s = this.state.view, h = this.hiresView;
        var same = s.width === v.first.width && s.height === v.first.height &&
            JSON.stringify(h) === JSON.stringify(v.hires);
        if (same) return false;
        this.dispatch({type: "view", width: v.first.width, height: v.first.height});
        this.hiresView = v.hires;
        return true;
    };

    // ---------------------------------------------------------------- the panel's gradio controls

    Editor.prototype.currentTiles = function() {
        return MoDCore.tileSettings(this.state.preset.tiles || this.state.stash.tiles || MoDCore.DEFAULT_TILES);
    };

    /** JSON -> controls. Events the writes raise are ignored (this.syncing). */
    Editor.prototype.syncControls = function() {
        this.syncing = true;
        try {
            var p = this.state.preset, t = this.currentTiles(), w = MoDCore.weightSettings(p.weights);
            var overlap = typeof t.overlap === "object" ? t.overlap.x : t.overlap;
            setRadio(this.id("mode"), this.state.mode);
            setRadio(this.id("weighting"), w.kind);
            setNumber(this.id("variance"), w.variance);
            setRadio(this.id("passes"), p.passes || "both");
            setNumber(this.id("tile_w"), t.width);
            setNumber(this.id("tile_h"), t.height);
            setNumber(this.id("overlap"), overlap);
            setNumber(this.id("batch"), t.batch_size);
            var vae = MoDCore.vaeSettings(p.vae);
            setRadio(this.id("vae_tiling"), vae.tiling);
            if (typeof vae.tile === "number" || vae.tile === null) setNumber(this.id("vae_tile"), vae.tile || 0);
            this.syncUpscale();
        } finally {
            this.syncing = false;
        }
    };

    /**
     * JSON -> the Upscale controls. The Scale or Width x Height fields show the section's own
     * sizing; the others keep what was typed there for the target radio to use.
     */
    Editor.prototype.syncUpscale = function() {
        var s = this.state, on = isObject(s.preset.upscale);
        var u = MoDCore.upscaleSettings(on ? s.preset.upscale : s.stash.upscale || MoDCore.DEFAULT_UPSCALE);
        var number = function(id, v) { if (typeof v === "number") setNumber(id, v); };
        setRadio(this.id("upscale_target"), s.upscaleChoice);
        setRadio(this.id("upscale_fit"), u.fit);
        number(this.id("upscale_guide"), u.guide_strength);
        if (!on) return;
        number(this.id("upscale_scale"), u.scale);
        number(this.id("upscale_width"), u.width);
        number(this.id("upscale_height"), u.height);
    };

    /** Controls -> JSON. Range drags preview at once; typed numbers count when committed (change). */
    Editor.prototype.bindControls = function() {
        var self = this;
        var sliders = {tile_w: "width", tile_h: "height", overlap: "overlap", batch: "batch_size"};
        var on = function(name, handler) {
            var el = q("#" + self.id(name));
            if (!el) return;
            var listener = function(e) {
                if (self.syncing || !self.state || self.state.error) return;
                handler(e);
            };
            el.addEventListener("input", listener);
            el.addEventListener("change", listener);
        };
        var onNumber = function(name, handler) { // handler(value, final)
            on(name, function(e) {
                var final = e.type === "change";
                if (e.target.type === "number" && !final) return; // still typing
                var v = parseFloat(e.target.value);
                if (isFinite(v)) handler(v, final);
            });
        };
        var onRadio = function(name, handler) {
            on(name, function(e) { if (e.target.type === "radio" && e.target.checked) handler(e.target.value); });
        };
        Object.keys(sliders).forEach(function(name) {
            onNumber(name, function(v, final) {
                var change = {};
                change[sliders[name]] = v;
                self.commit({type: "tiles", tiles: change}, !final);
                if (final) self.syncControls(); // show the snapped value
            });
        });
        onNumber("variance", function(v, final) { self.commit({type: "weights", variance: v}, !final); });
        onNumber("vae_tile", function(v, final) {
            self.commit({type: "vae", tile: v}, !final);
            if (final) self.syncControls();
        });
        onRadio("vae_tiling", function(v) { self.commit({type: "vae", tiling: v}); });
        onRadio("upscale_target", function(v) { self.setUpscaleTarget(v); });
        onRadio("upscale_fit", function(v) { self.commit({type: "upscaleOptions", upscale: {fit: v}}); });
        onNumber("upscale_guide", function(v, final) { self.commit({type: "upscaleOptions", upscale: {guide_strength: v}}, !final); });
        onNumber("upscale_scale", function(v, final) { if (final) self.editUpscaleSize("scale", {scale: v}); });
        ["upscale_width", "upscale_height"].forEach(function(name) {
            onNumber(name, function(v, final) {
                if (final) self.editUpscaleSize("size", {width: num(self.id("upscale_width")), height: num(self.id("upscale_height"))});
            });
        });
        onRadio("weighting", function(v) { self.commit({type: "weights", kind: v}); });
        onRadio("passes", function(v) { self.commit({type: "passes", passes: v}); });
        onRadio("mode", function(v) {
            self.commit({type: "mode", mode: v});
            self.renderFields(true);
        });
        ["width", "height", "hr_scale", "hr_resize_x", "hr_resize_y", "scale"].forEach(function(name) {
            var el = q("#" + self.tab + "_" + name);
            if (el) el.addEventListener("input", function() { if (self.refreshView()) self.render(); });
        });
        Object.keys(UPSCALE_TARGETS).forEach(function(key) {
            var b = q("#" + self.id(key));
            if (b) b.addEventListener("click", function() { self.upscale(key); });
        });
        var exp = q("#" + this.id("export"));
        if (exp) exp.addEventListener("click", function() { self.exportJson(); });
        Object.keys(TITLES).forEach(function(key) {
            var el = q("#" + self.id(key));
            if (el && !el.title) el.title = TITLES[key];
        });
    };

    /** The Upscale target radio: off, a fixed target, or what the Scale / Width x Height fields hold. */
    Editor.prototype.setUpscaleTarget = function(choice) {
        var fixed = MoDCore.UPSCALE_PRESETS[choice], set = null;
        if (fixed) set = Object.assign({}, fixed);
        else if (choice === "scale") set = {scale: num(this.id("upscale_scale")) || 2};
        else if (choice === "size") set = {width: num(this.id("upscale_width")) || 3840, height: num(this.id("upscale_height")) || 2160};
        this.commit({type: "upscale", upscale: set, choice: choice});
        this.syncControls();
    };

    /** Scale or Width x Height typed: they count while the section is sized that way, else they wait for the radio. */
    Editor.prototype.editUpscaleSize = function(kind, change) {
        var u = this.state.preset.upscale;
        if (!isObject(u) || (MoDCore.upscaleSettings(u).width !== undefined) !== (kind === "size")) return;
        this.commit({type: "upscaleOptions", upscale: change, choice: kind});
        this.syncControls(); // show the snapped value
    };

    /** The Upscaler dropdown (through gradio's change event; Python sets it from the JSON). */
    Editor.prototype.setUpscaler = function(name) {
        var s = this.state, u = MoDCore.upscaleSettings(s.preset.upscale || s.stash.upscale || MoDCore.DEFAULT_UPSCALE);
        if (s.error || typeof name !== "string" || !name.trim() || name === u.upscaler) return; // its echo of the JSON
        this.commit({type: "upscaleOptions", upscale: {upscaler: name}});
    };

    // ---------------------------------------------------------------- toolbar, upscale, export

    Editor.prototype.act = function(what) {
        var s = this.state, sel = s.selected;
        if (s.error) return;
        if (what === "add") {
            var w = s.view.width, h = s.view.height;
            this.commit({type: "add", box: {x: w / 4, y: h / 4, width: w / 2, height: h / 2}});
        } else if (what === "duplicate" && sel >= 0) {
            this.commit({type: "duplicate", index: sel});
        } else if (what === "delete" && sel >= 0) {
            this.commit({type: "delete", index: sel});
        } else if ((what === "forward" || what === "backward") && sel >= 0) {
            this.commit({type: "reorder", index: sel, to: what});
        } else if (what === "use-preset-canvas" && s.preset.canvas) {
            this.setSize(s.preset.canvas.width, s.preset.canvas.height);
        }
        this.syncControls();
        this.renderFields(true);
    };

    /** Set the generation's size; past the size sliders' maximum, txt2img draws half and hires-fixes 2x. */
    Editor.prototype.setSize = function(w, h) {
        var input = q("#" + this.tab + "_width input[type=number]");
        var max = input ? parseFloat(input.getAttribute("max")) || Infinity : Infinity;
        this.note = "";
        if (w <= max && h <= max) {
            if (this.tab === "img2img") this.selectResizeTab("Resize to");
            setNumber(this.tab + "_width", w);
            setNumber(this.tab + "_height", h);
        } else if (this.tab === "txt2img" && w / 2 <= max && h / 2 <= max && (w / 2) % 8 === 0 && (h / 2) % 8 === 0) {
            setNumber("txt2img_width", w / 2);
            setNumber("txt2img_height", h / 2);
            if (typeof inputAccordionChecked === "function" && q("#txt2img_hr")) inputAccordionChecked("txt2img_hr", true);
            setNumber("txt2img_hr_scale", 2);
            setNumber("txt2img_hr_resize_x", 0);
            setNumber("txt2img_hr_resize_y", 0);
            this.note = w + "\u00d7" + h + " is past the size sliders: " + (w / 2) + "\u00d7" + (h / 2) + " with hires fix 2x instead.";
        } else {
            this.note = w + "\u00d7" + h + " is past the size sliders (" + max + " px); use Resize by or hires fix.";
        }
        if (this.refreshView()) this.render();
        else this.render();
    };

    Editor.prototype.selectResizeTab = function(label) {
        var buttons = app().querySelectorAll("#img2img_tabs_resize > .tab-nav > button, #img2img_tabs_resize .tab-nav button");
        for (var i = 0; i < buttons.length; i++) {
            if (buttons[i].textContent.trim() === label) {
                if (!buttons[i].classList.contains("selected")) buttons[i].click();
                return true;
            }
        }
        return false;
    };

    /** One click: the size of an upscale (txt2img: hires fix; img2img: the upscale section) and the upscale presets' tile grid. */
    Editor.prototype.upscale = function(key) {
        var target = UPSCALE_TARGETS[key], note = "";
        if (this.tab === "txt2img") {
            if (target) {
                setNumber("txt2img_width", target[0] / 2);
                setNumber("txt2img_height", target[1] / 2);
            }
            if (typeof inputAccordionChecked === "function" && q("#txt2img_hr")) inputAccordionChecked("txt2img_hr", true);
            setNumber("txt2img_hr_scale", 2);
            setNumber("txt2img_hr_resize_x", 0);
            setNumber("txt2img_hr_resize_y", 0);
            var first = this.readView().first;
            note = "Hires fix 2x: " + first.width + "\u00d7" + first.height + " \u2192 " + (first.width * 2) + "\u00d7" + (first.height * 2) + ".";
        } else { // img2img: the preset's upscale section (the engine upscales the source once)
            var choice = UPSCALE_BUTTON_CHOICES[key], set = Object.assign({}, MoDCore.UPSCALE_PRESETS[choice]);
            if (target) set.fit = "crop"; // a fixed size fills the frame whatever the source's aspect ratio
            this.dispatch({type: "upscale", upscale: set, choice: choice});
            note = "Upscale: " + choice + (target ? ", fit crop." : ".");
        }
        var mode = this.state.preset.regions && this.state.preset.regions.length ? "both" : "tiles";
        this.dispatch({type: "mode", mode: mode, tiles: UPSCALE_GRID});
        this.dispatch({type: "tiles", tiles: UPSCALE_GRID});
        if (this.tab === "txt2img") this.dispatch({type: "passes", passes: "both"});
        this.commit(null);
        this.syncControls();
        this.note = note + " Tile grid 768\u00d7768 px, overlap 128 px.";
        this.render();
    };

    Editor.prototype.exportJson = function() {
        var text = MoDCore.serialise(this.state.preset);
        var name = (this.state.preset.name || "mixture-of-diffusers").replace(/[^\w.\- ]+/g, "_").trim() || "preset";
        var a = make("a", {href: URL.createObjectURL(new Blob([text + "\n"], {type: "application/json"})), download: name + ".json"});
        document.body.appendChild(a);
        a.click();
        setTimeout(function() {
            URL.revokeObjectURL(a.href);
            a.remove();
        }, 1000);
    };

    // ---------------------------------------------------------------- mouse and keyboard

    Editor.prototype.toImage = function(e) {
        var r = this.canvas.getBoundingClientRect();
        return {x: (e.clientX - r.left) / this.k, y: (e.clientY - r.top) / this.k};
    };

    Editor.prototype.boxes = function() {
        return MoDCore.snappedBoxes(this.state.preset, this.state.view);
    };

    Editor.prototype.pointerDown = function(e) {
        if (e.button !== 0 || this.state.error || !this.k) return;
        var pt = this.toImage(e), boxes = this.boxes();
        var hit = MoDCore.hitTest(boxes, pt.x, pt.y, this.state.selected, (HANDLE + 2) / this.k);
        if (e.ctrlKey || e.metaKey || e.altKey) hit = {kind: "none", index: -1}; // draw over existing regions
        this.drag = {kind: hit.kind === "handle" ? "resize" : hit.kind === "region" ? "move" : "create", index: hit.index,
            handle: hit.handle, x0: pt.x, y0: pt.y, sx: e.clientX, sy: e.clientY, orig: boxes[hit.index], box: null, moved: false};
        if (hit.kind === "region" && hit.index !== this.state.selected) {
            this.dispatch({type: "select", index: hit.index});
            this.renderFields(true);
        }
        this.canvas.setPointerCapture(e.pointerId);
        this.canvas.focus({preventScroll: true});
        e.preventDefault();
        this.render();
    };

    Editor.prototype.pointerMove = function(e) {
        var pt = this.toImage(e), d = this.drag, v = this.state.view;
        if (!d) {
            if (this.state.error || !this.k) return;
            var hit = MoDCore.hitTest(this.boxes(), pt.x, pt.y, this.state.selected, (HANDLE + 2) / this.k);
            var cursors = {n: "ns-resize", s: "ns-resize", e: "ew-resize", w: "ew-resize", nw: "nwse-resize", se: "nwse-resize",
                ne: "nesw-resize", sw: "nesw-resize"};
            this.canvas.style.cursor = hit.kind === "handle" ? cursors[hit.handle] : hit.kind === "region" ? "move" : "crosshair";
            return;
        }
        if (!d.moved && Math.abs(e.clientX - d.sx) + Math.abs(e.clientY - d.sy) < 4) return;
        d.moved = true;
        var dx = pt.x - d.x0, dy = pt.y - d.y0;
        if (d.kind === "create") d.box = MoDCore.boxFromDrag(d.x0, d.y0, pt.x, pt.y, v.width, v.height);
        else if (d.kind === "move") d.box = MoDCore.moveBox(d.orig, dx, dy, v.width, v.height);
        else d.box = MoDCore.resizeBox(d.orig, d.handle, dx, dy, v.width, v.height);
        this.render();
    };

    Editor.prototype.pointerUp = function(e, cancelled) {
        var d = this.drag;
        this.drag = null;
        if (!d) return;
        if (this.canvas.hasPointerCapture && this.canvas.hasPointerCapture(e.pointerId)) this.canvas.releasePointerCapture(e.pointerId);
        if (cancelled || !d.moved || !d.box) {
            if (!cancelled && d.kind === "create") this.dispatch({type: "select", index: -1});
            this.renderFields(true);
            this.render();
            return;
        }
        if (d.kind === "create") this.commit({type: "add", box: d.box});
        else this.commit({type: "setBox", index: d.index, box: d.box});
        this.syncControls();
        this.renderFields(true);
    };

    Editor.prototype.keyDown = function(e) {
        var sel = this.state.selected, step = e.shiftKey ? 64 : 8, moves = {
            ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step]};
        if (this.state.error) return;
        if (moves[e.key] && sel >= 0) {
            this.commit({type: "nudge", index: sel, dx: moves[e.key][0], dy: moves[e.key][1]}, true);
        } else if ((e.key === "Delete" || e.key === "Backspace") && sel >= 0) {
            this.commit({type: "delete", index: sel});
            this.syncControls();
        } else if (e.key === "Escape") {
            this.dispatch({type: "select", index: -1});
            this.render();
        } else if ((e.key === "PageUp" || e.key === "PageDown") && sel >= 0) {
            this.commit({type: "reorder", index: sel, to: e.key === "PageUp" ? "forward" : "backward"});
        } else if (e.key === "Tab" && !e.ctrlKey && !e.altKey && this.state.preset.regions.length && sel >= -1) {
            var n = this.state.preset.regions.length, next = sel + (e.shiftKey ? -1 : 1);
            if (next < 0 || next >= n) return; // leave the canvas
            this.dispatch({type: "select", index: next});
            this.render();
        } else {
            return;
        }
        e.preventDefault();
        e.stopPropagation();
        this.renderFields(true);
    };

    Editor.prototype.fieldInput = function(e, final) {
        var el = e.target, sel = this.state.selected;
        if (sel < 0 || this.state.error) return;
        var key = el.getAttribute("data-field"), boxKey = el.getAttribute("data-box");
        if (key) {
            if (el.tagName === "INPUT" && !final) return; // numbers count when committed
            var fields = {};
            fields[key] = el.value;
            this.commit({type: "updateRegion", index: sel, fields: fields}, !final);
            if (final && el.tagName === "INPUT") this.renderFields(true);
            this.renderList();
        } else if (boxKey && final) {
            var b = Object.assign({}, this.boxes()[sel]), v = parseFloat(el.value);
            if (!isFinite(v)) return this.renderFields(true);
            b[boxKey] = v;
            this.commit({type: "setBox", index: sel, box: b});
            this.renderFields(true);
        }
    };

    // ---------------------------------------------------------------- drawing

    Editor.prototype.colourOf = function(i) {
        return PALETTE[i % PALETTE.length];
    };

    /** The preset as drawn: the drag in progress applied. */
    Editor.prototype.previewPreset = function() {
        var d = this.drag;
        if (!d || !d.moved || !d.box) return this.state.preset;
        var s = MoDCore.reduce(this.state, d.kind === "create" ? {type: "add", box: d.box} : {type: "setBox", index: d.index, box: d.box});
        return s.preset;
    };

    Editor.prototype.gridPassShown = function() {
        var p = this.state.preset.passes || "both";
        if (!this.hiresView || p === "first") return "first";
        if (this.gridPass === "first" || this.gridPass === "hires") return this.gridPass;
        return "hires";
    };

    Editor.prototype.render = function() {
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
        var img = this.tab === "img2img" ? sourceImage() : null;
        if (img) this.drawSource(ctx, img, W, H);

        var preset = this.previewPreset(), px = 1 / k;
        var passShown = this.gridPassShown();
        var hv = passShown === "hires" ? this.hiresView : null;
        var planW = hv ? hv.width : W, planH = hv ? hv.height : H, scale = W / planW;
        var plan = MoDCore.buildPlan(MoDCore.canonical(preset), planW, planH);
        if (!plan.problems) this.drawHeat(ctx, plan, W, H, img ? 0.5 : 0.85);
        else this.uncovered = 0;
        var tiles = plan.problems ? this.tilesOnly(preset, planW, planH) : plan.tiles;
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
        this.renderStats();
        this.renderMessage();
        this.gridPickWrap.hidden = !(this.hiresView && (this.state.preset.passes || "both") !== "first");
        this.gridPick.value = passShown;
        this.host.setAttribute("data-regions", String((this.state.preset.regions || []).length));
        this.host.setAttribute("data-selected", String(this.state.selected));
    };

    /** The source image as the upscale places it on the target (cropped or padded), else over the whole canvas. */
    Editor.prototype.drawSource = function(ctx, img, W, H) {
        var up = this.upscaleInfo(), g = up && up.geometry;
        if (g && g.width === W && g.height === H) ctx.drawImage(img, g.x, g.y, g.resize_w, g.resize_h);
        else ctx.drawImage(img, 0, 0, W, H);
    };

    Editor.prototype.tilesOnly = function(preset, w, h) {
        if (!preset.tiles) return null;
        var p = MoDCore.buildPlan({version: 1, tiles: preset.tiles, regions: []}, w, h);
        return p.problems ? null : p.tiles;
    };

    Editor.prototype.drawHeat = function(ctx, plan, W, H, alpha) {
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

    Editor.prototype.drawRegions = function(ctx, preset, k, colours) {
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
            var label = (i + 1) + (preset.regions[i].prompt ? " " + excerpt(preset.regions[i].prompt, 28) : "");
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

    Editor.prototype.renderReadout = function(preset) {
        var d = this.drag, v = this.state.view, sel = this.state.selected, b = null, label = "";
        if (d && d.moved && d.box) {
            b = d.box;
            label = d.kind === "create" ? "New region" : "Region " + (d.index + 1);
        } else if (sel >= 0 && sel < preset.regions.length) {
            b = MoDCore.snappedBoxes(preset, v)[sel];
            label = "Region " + (sel + 1);
        }
        if (!b) {
            this.readout.textContent = "Canvas " + v.width + "\u00d7" + v.height + " px (latent " + v.width / 8 + "\u00d7" + v.height / 8 +
                "). Drag on empty space (Ctrl+drag anywhere) to draw a region; click one to select it.";
            return;
        }
        this.readout.textContent = label + ": x " + b.x + ", y " + b.y + ", " + b.width + "\u00d7" + b.height + " px" +
            " (latent " + b.x / 8 + ", " + b.y / 8 + ", " + b.width / 8 + "\u00d7" + b.height / 8 + ")";
    };

    /** img2img with an upscale section: one line from the source to the target the canvas shows. */
    Editor.prototype.renderUpscaleNote = function() {
        var up = this.upscaleInfo(), x = "\u00d7", text = "";
        if (up) {
            text = "Upscale with " + up.upscaler + ": ";
            if (up.error) text += up.error;
            else if (up.source) text += "source " + up.source.width + x + up.source.height + " \u2192 target " + up.width + x + up.height + " (" + up.fit + ")";
            else if (up.width) text += "target " + up.width + x + up.height + " (" + up.fit + "); put an image into img2img to see how it fits";
            else text += up.scale + x + " the source; put an image into img2img to see the target";
        }
        if (this.upscaleNote.textContent !== text) this.upscaleNote.textContent = text;
        this.upscaleNote.hidden = !text;
    };

    Editor.prototype.renderFields = function(force) {
        var sel = this.state.selected, regions = this.state.preset.regions || [];
        if (sel < 0 || sel >= regions.length || this.state.error) {
            this.fields.hidden = true;
            return;
        }
        this.fields.hidden = false;
        var r = MoDCore.fullRegion(regions[sel]), b = this.boxes()[sel], active = document.activeElement;
        this.fields.style.setProperty("--mod-region-colour", rgb(this.colourOf(sel)));
        var set = function(el, value) {
            if (el === active && !force) return;
            var text = value === null || value === undefined ? "" : String(value);
            if (el.value !== text) el.value = text;
        };
        this.fields.querySelectorAll("[data-box]").forEach(function(el) { set(el, b[el.getAttribute("data-box")]); });
        this.fields.querySelectorAll("[data-field]").forEach(function(el) {
            var key = el.getAttribute("data-field");
            if (el === active && force && el.tagName === "TEXTAREA") return; // never disturb typing
            set(el, r[key]);  // fullRegion fills the defaults (prompt mode "replace", weight 1, seed -1)
        });
    };

    Editor.prototype.renderList = function() {
        var self = this, regions = this.state.preset.regions || [], sel = this.state.selected;
        var html = regions.map(function(r, i) {
            var c = self.colourOf(i), bits = [];
            if (r.cfg_scale !== null && r.cfg_scale !== undefined) bits.push("CFG " + r.cfg_scale);
            if (r.weight !== undefined && r.weight !== 1) bits.push("weight " + r.weight);
            if (r.seed !== undefined && r.seed !== -1) bits.push("seed " + r.seed);
            if (r.prompt_mode === "append") bits.push("append");
            return "<li data-index=\"" + i + "\" class=\"mod-item" + (i === sel ? " mod-selected" : "") + "\">" +
                "<span class=\"mod-swatch\" style=\"background:" + rgb(c) + "\"></span><b>" + (i + 1) + "</b> " +
                escapeHtml(excerpt(r.prompt, 60) || "(main prompt)") +
                (bits.length ? " <small>" + escapeHtml(bits.join(", ")) + "</small>" : "") + "</li>";
        }).join("");
        if (html !== this.listHtml) {
            this.list.innerHTML = html;
            this.listHtml = html;
        }
        this.list.hidden = !regions.length;
    };

    function escapeHtml(s) {
        return String(s).replace(/[&<>"']/g, function(c) {
            return {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&#39;"}[c];
        });
    }

    function spread(values) {
        var lo = Math.min.apply(null, values), hi = Math.max.apply(null, values);
        return (lo === hi ? lo : lo + "\u2013" + hi) + " px";
    }

    function passLine(name, preset, w, h) {
        var plan = MoDCore.buildPlan(MoDCore.canonical(preset), w, h);
        if (plan.problems) return name + " " + w + "\u00d7" + h + ": " + plan.problems.join("; ");
        var parts = [name + " " + w + "\u00d7" + h];
        var t = plan.tiles;
        if (t) {
            var over = [];
            if (t.overlapsX.length) over.push("x " + spread(t.overlapsX));
            if (t.overlapsY.length) over.push("y " + spread(t.overlapsY));
            parts.push("tiles " + t.columns.starts.length + "\u00d7" + t.rows.starts.length + " = " + t.tiles.length + " of " +
                t.tileWidth + "\u00d7" + t.tileHeight + " px" + (over.length ? ", real overlaps " + over.join(", ") : ""));
        }
        if (plan.regions.length) parts.push(plan.regions.length + " region" + (plan.regions.length === 1 ? "" : "s"));
        parts.push(plan.modelCallsPerStep + " model call" + (plan.modelCallsPerStep === 1 ? "" : "s") + " per step (" +
            plan.crops.length + " crops, batch " + plan.batchSize + ")");
        var mem = MoDCore.estimateMemory(plan);
        parts.push("peak \u2248 " + gib(mem.bytes) + " (estimate)");
        return parts.join(" \u00b7 ");
    }

    Editor.prototype.renderStats = function() {
        var preset = this.previewPreset(), v = this.state.view, passes = preset.passes || "both", lines = [];
        if (this.hiresView) {
            lines.push(passes === "hires" ? "First pass " + v.width + "\u00d7" + v.height + ": not mixed (passes: hires)" : passLine("First pass", preset, v.width, v.height));
            lines.push(passes === "first" ? "Hires pass " + this.hiresView.width + "\u00d7" + this.hiresView.height + ": not mixed (passes: first)" :
                passLine("Hires pass", preset, this.hiresView.width, this.hiresView.height));
        } else {
            lines.push(passLine("Canvas", preset, v.width, v.height));
        }
        var m = MoDCore.MEMORY_MODEL;
        this.stats.innerHTML = lines.map(function(l) { return "<div>" + escapeHtml(l) + "</div>"; }).join("") +
            "<div class=\"mod-formula\">Peak memory estimate for " + m.name + " sampling (not VAE decoding): " + gib(m.weightsBytes) +
            " of weights + " + (m.bytesPerLatentPixelRow / 1024) + " KiB \u00d7 crop latent pixels \u00d7 crops per call \u00d7 2 (cond + uncond), for the largest call. " +
            "A rough guide, not a measurement.</div>";
    };

    Editor.prototype.renderMessage = function() {
        var s = this.state, p = s.preset, v = s.view, msgs = [];
        if (s.error) msgs.push("The JSON below has a problem (" + escapeHtml(s.error) + "); the editor shows the last good configuration and waits for a fix.");
        if (this.note) msgs.push(escapeHtml(this.note));
        if (!s.error && p.units === "px" && p.canvas && (p.canvas.width !== v.width || p.canvas.height !== v.height) && (p.regions || []).length) {
            var up = this.upscaleInfo(), byUpscale = !!(up && up.width); // the upscale target, not the size sliders, sets the canvas
            msgs.push("The regions were drawn on " + p.canvas.width + "\u00d7" + p.canvas.height + " and are scaled to " + v.width + "\u00d7" + v.height +
                (byUpscale ? ", the upscale target." : ". <button type=\"button\" class=\"mod-btn mod-inline\" data-act=\"use-preset-canvas\">Use " +
                    p.canvas.width + "\u00d7" + p.canvas.height + "</button>"));
        }
        if (!s.error && !p.tiles && (p.regions || []).length && this.uncovered > 0) {
            msgs.push("The regions leave " + Math.max(1, Math.round(this.uncovered * 100)) + "% of the canvas uncovered (hatched red): " +
                "every latent pixel needs a region, or add a tile grid (mode: both).");
        }
        if (!s.error && !p.tiles && !(p.regions || []).length) msgs.push("No regions yet: drag on the canvas to draw one.");
        if (!s.error && this.tab === "txt2img" && isObject(p.upscale)) {
            msgs.push("The upscale section works in img2img only (txt2img refuses it): use hires fix here, or remove it from the JSON.");
        }
        var html = msgs.map(function(m) { return "<div>" + m + "</div>"; }).join("");
        if (html !== this.messageHtml) {
            this.message.innerHTML = html;
            this.messageHtml = html;
        }
        this.message.hidden = !msgs.length;
    };

    // ------------------------------------------------------------------ set-up

    function setup() {
        if (typeof MoDCore === "undefined") {
            console.warn("Mixture of Diffusers: mixture_of_diffusers_core.js did not load; the region editor is off.");
            return;
        }
        TABS.forEach(function(tab) {
            if (editors[tab]) return;
            var host = q("#mod_" + tab + "_editor .mod-editor");
            if (host) editors[tab] = new Editor(tab, host);
        });
    }

    window.MoD = {
        /** Called by the panel's gradio change event of the JSON textbox. */
        configChanged: function(tab, text) {
            if (editors[tab]) editors[tab].configChanged(text);
        },
        /** Called by the gradio change event of img2img's Upscaler dropdown. */
        upscalerChanged: function(tab, name) {
            if (editors[tab]) editors[tab].setUpscaler(name);
        },
        editor: function(tab) {
            return editors[tab] || null;
        },
        setup: setup,
    };

    if (typeof onUiLoaded === "function") onUiLoaded(setup);
})();
