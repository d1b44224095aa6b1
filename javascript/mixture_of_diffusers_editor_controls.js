/*
 * Mixture of Diffusers, region editor: the panel's gradio controls. They and the preset JSON
 * follow each other both ways (mode, passes, weighting, tile grid, Tiled VAE, img2img's Upscale
 * section); the upscale buttons set the generation's size (txt2img: hires fix 2x) and the
 * upscale presets' tile grid; Export downloads the JSON. The tooltips of the gradio controls
 * are here too.
 *
 * Load order: none needed (the WebUI loads javascript/*.js as classic scripts in sorted name
 * order). This file only registers its part at load time; MoDCore and the page helpers of
 * mixture_of_diffusers.js (MoDEditor.q, setNumber, ...) are reached when the methods run.
 */
(function() {
    "use strict";

    var E = window.MoDEditor = window.MoDEditor || {parts: {}};
    var part = E.parts.controls = {};
    var UPSCALE_GRID = {width: 768, height: 768, overlap: 128, batch_size: "auto"}; // presets/upscale-*.json
    var UPSCALE_TARGETS = {up2x: null, upqhd: [2560, 1440], up4k: [3840, 2160], up4kcn: [3840, 2160]};
    // img2img: the buttons set the preset's upscale section to these Upscale target choices
    var UPSCALE_BUTTON_CHOICES = {up2x: "2x", upqhd: "QHD 2560\u00d71440", up4k: "4K UHD 3840\u00d72160", up4kcn: "4K UHD 3840\u00d72160"};
    // img2img: the buttons' upscale.controlnet_tile (the one with ControlNet tile is shown when a tile model is installed)
    var CONTROLNET_TILE = {up4kcn: "auto"};
    var AUTO_SIDE_NOTE = "Here 0 is auto: both sides are chosen, a square tile, for the device's free memory when the job starts " +
        "(the line under the editor shows the choice). Moving one side off 0 gives the other the same size; setting one to 0 makes both auto.";
    // Built when the tooltips are set, not at load time: they read the field table through MoDCore.
    function titles() {
        return {
            up2x: "Upscale 2x: txt2img turns on hires fix at 2x; img2img sets the Upscale section to scale 2 (the source image upscaled once, " +
                "then refined in tiles); sets a 768 px tile grid with 128 px overlap",
            upqhd: "QHD 2560x1440: txt2img draws 1280x720 and hires-fixes it 2x; img2img sets the Upscale section to 2560x1440, fit crop " +
                "(any source, cropped to fill); sets a 768 px tile grid with 128 px overlap",
            up4k: "4K UHD 3840x2160: txt2img draws 1920x1080 and hires-fixes it 2x; img2img sets the Upscale section to 3840x2160, fit crop " +
                "(any source, cropped to fill); sets a 768 px tile grid with 128 px overlap",
            up4kcn: "4K UHD with ControlNet tile: as 4K UHD, and a ControlNet unit with your tile model (upscale.controlnet_tile: auto) " +
                "holds every tile to the upscaled image, so a denoising strength of 0.4 to 0.6 adds detail without drifting",
            upscaler: "img2img: the WebUI upscaler that resizes the source image once before the tiled refinement (upscale.upscaler); " +
                "ESRGAN-type models upscale by 4 per pass, then Lanczos fits the size",
            upscale_target: "off: no upscale. 2x: twice the source. QHD / 4K UHD: 2560x1440 / 3840x2160 whatever the source. scale: the Scale " +
                "field. size: Width x Height. The editor's canvas shows the target.",
            upscale_scale: MoDCore.fieldTitle("upscale.scale", "(target: scale) Each side must land in " + MoDCore.field("upscale.width").min +
                " to " + MoDCore.MAX_SIDE + " px."),
            upscale_width: MoDCore.fieldTitle("upscale.width", "(target: size) Snapped to 8 px."),
            upscale_height: MoDCore.fieldTitle("upscale.height", "(target: size) Snapped to 8 px."),
            upscale_fit: MoDCore.fieldTitle("upscale.fit"),
            upscale_guide: MoDCore.fieldTitle("upscale.guide_strength", "It keeps the composition at high denoising strength."),
            vae_tiling: MoDCore.fieldTitle("vae.tiling"),
            vae_tile: MoDCore.fieldTitle("vae.tile", "Here 0 chooses it from the free memory. Smaller tiles need less memory and take " +
                "longer; the result does not depend on it."),
            mode: "tiles: a grid of tiles driven by the main prompt (large images, upscaling). regions: your boxes, each with its own prompt; " +
                "every latent pixel needs one. both: the grid with your regions on top.",
            passes: MoDCore.fieldTitle("passes", "Without hires fix only the first pass runs."),
            weighting: MoDCore.fieldTitle("weights.kind", "gaussian is highest in a crop's middle, so crops hand over smoothly; " +
                "constant is a plain average where crops overlap."),
            variance: MoDCore.fieldTitle("weights.variance", "Relative to each crop's size."),
            tile_w: MoDCore.fieldTitle("tiles.width", "Snapped to 8 px (one latent cell). " + AUTO_SIDE_NOTE),
            tile_h: MoDCore.fieldTitle("tiles.height", "Snapped to 8 px (one latent cell). " + AUTO_SIDE_NOTE),
            overlap: MoDCore.fieldTitle("tiles.overlap", "Snapped to 8 px, below the tile size. The planner takes the fewest tiles that " +
                "overlap at least this much and spreads them evenly, so real overlaps (shown under the editor) can be larger."),
            batch: MoDCore.fieldTitle("tiles.batch_size", "Here 0 is auto: the batch is chosen for the device's free memory when the job " +
                "starts (the line under the editor shows the choice). Regions without a tile grid use " + MoDCore.DEFAULT_BATCH_SIZE + "."),
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
    }

    // ---------------------------------------------------------------- the panel's gradio controls

    /** A tile size or batch on its slider: "auto" is 0 (what is not a number, a typo in the JSON, leaves the slider). */
    function sliderValue(v) {
        return v === MoDCore.AUTO ? 0 : typeof v === "number" ? v : null;
    }

    /** JSON -> controls, all but the slider named `except` (one being dragged). Events the writes raise are ignored (this.syncing). */
    part.syncControls = function(except) {
        this.syncing = true;
        var self = this, number = function(name, v) {
            if (name !== except && v !== null) E.setNumber(self.id(name), v);
        };
        try {
            var p = this.state.preset, t = this.currentTiles(), w = MoDCore.weightSettings(p.weights);
            var overlap = typeof t.overlap === "object" ? t.overlap.x : t.overlap;
            E.setRadio(this.id("mode"), this.state.mode);
            E.setRadio(this.id("weighting"), w.kind);
            E.setNumber(this.id("variance"), w.variance);
            E.setRadio(this.id("passes"), p.passes || "both");
            number("tile_w", sliderValue(t.width));
            number("tile_h", sliderValue(t.height));
            number("overlap", sliderValue(overlap));
            number("batch", sliderValue(t.batch_size));
            var vae = MoDCore.vaeSettings(p.vae);
            E.setRadio(this.id("vae_tiling"), vae.tiling);
            if (typeof vae.tile === "number" || vae.tile === null) E.setNumber(this.id("vae_tile"), vae.tile || 0);
            this.syncUpscale();
        } finally {
            this.syncing = false;
        }
    };

    /**
     * JSON -> the Upscale controls. The Scale or Width x Height fields show the section's own
     * sizing; the others keep what was typed there for the target radio to use.
     */
    part.syncUpscale = function() {
        var s = this.state, on = E.isObject(s.preset.upscale);
        var u = MoDCore.upscaleSettings(on ? s.preset.upscale : s.stash.upscale || MoDCore.DEFAULT_UPSCALE);
        var number = function(id, v) { if (typeof v === "number") E.setNumber(id, v); };
        E.setRadio(this.id("upscale_target"), s.upscaleChoice);
        E.setRadio(this.id("upscale_fit"), u.fit);
        number(this.id("upscale_guide"), u.guide_strength);
        if (!on) return;
        number(this.id("upscale_scale"), u.scale);
        number(this.id("upscale_width"), u.width);
        number(this.id("upscale_height"), u.height);
    };

    /** Controls -> JSON. Range drags preview at once; typed numbers count when committed (change). */
    part.bindControls = function() {
        var self = this;
        var sliders = {tile_w: "width", tile_h: "height", overlap: "overlap", batch: "batch_size"};
        var on = function(name, handler) {
            var el = E.q("#" + self.id(name));
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
        var OTHER_SIDE = {tile_w: "height", tile_h: "width"}, square = null;
        Object.keys(sliders).forEach(function(name) {
            onNumber(name, function(v, final) {
                var change = {};
                change[sliders[name]] = v; // 0: auto (MoDCore's cleanTiles)
                if (OTHER_SIDE[name]) {
                    // A side dragged off auto keeps the other along (a square tile, as auto's) until the drag ends;
                    // the reducer alone would give the other side only the first step's size.
                    if (square === null) square = self.currentTiles().width === MoDCore.AUTO;
                    if (square) change[OTHER_SIDE[name]] = v;
                    if (final) square = null;
                }
                self.commit({type: "tiles", tiles: change}, !final);
                // final: show the snapped value; while dragging, the others (a tile side takes the other along off or onto auto)
                self.syncControls(final ? undefined : name);
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
                if (final) self.editUpscaleSize("size", {width: E.num(self.id("upscale_width")), height: E.num(self.id("upscale_height"))});
            });
        });
        onRadio("weighting", function(v) { self.commit({type: "weights", kind: v}); });
        onRadio("passes", function(v) { self.commit({type: "passes", passes: v}); });
        onRadio("mode", function(v) {
            self.commit({type: "mode", mode: v});
            self.renderFields(true);
        });
        ["width", "height", "hr_scale", "hr_resize_x", "hr_resize_y", "scale"].forEach(function(name) {
            var el = E.q("#" + self.tab + "_" + name);
            if (el) el.addEventListener("input", function() { if (self.refreshView()) self.render(); });
        });
        Object.keys(UPSCALE_TARGETS).forEach(function(key) {
            var b = E.q("#" + self.id(key));
            if (b) b.addEventListener("click", function() { self.upscale(key); });
        });
        var exp = E.q("#" + this.id("export"));
        if (exp) exp.addEventListener("click", function() { self.exportJson(); });
        var all = titles();
        Object.keys(all).forEach(function(key) {
            var el = E.q("#" + self.id(key));
            if (el && !el.title) el.title = all[key];
        });
    };

    /** The Upscale target radio: off, a fixed target, or what the Scale / Width x Height fields hold. */
    part.setUpscaleTarget = function(choice) {
        var fixed = MoDCore.UPSCALE_PRESETS[choice], set = null;
        if (fixed) set = Object.assign({}, fixed);
        else if (choice === "scale") set = {scale: E.num(this.id("upscale_scale")) || 2};
        else if (choice === "size") set = {width: E.num(this.id("upscale_width")) || 3840, height: E.num(this.id("upscale_height")) || 2160};
        this.commit({type: "upscale", upscale: set, choice: choice});
        this.syncControls();
    };

    /** Scale or Width x Height typed: they count while the section is sized that way, else they wait for the radio. */
    part.editUpscaleSize = function(kind, change) {
        var u = this.state.preset.upscale;
        if (!E.isObject(u) || (MoDCore.upscaleSettings(u).width !== undefined) !== (kind === "size")) return;
        this.commit({type: "upscaleOptions", upscale: change, choice: kind});
        this.syncControls(); // show the snapped value
    };

    /** The Upscaler dropdown (through gradio's change event; Python sets it from the JSON). */
    part.setUpscaler = function(name) {
        var s = this.state, u = MoDCore.upscaleSettings(s.preset.upscale || s.stash.upscale || MoDCore.DEFAULT_UPSCALE);
        if (s.error || typeof name !== "string" || !name.trim() || name === u.upscaler) return; // its echo of the JSON
        this.commit({type: "upscaleOptions", upscale: {upscaler: name}});
    };

    // ---------------------------------------------------------------- the generation's size, upscale buttons, export

    /** txt2img: hires fix on at 2x over a first pass of w x h (null: the size sliders as they are). */
    function hiresFix2x(w, h) {
        if (w !== null) {
            E.setNumber("txt2img_width", w);
            E.setNumber("txt2img_height", h);
        }
        if (typeof inputAccordionChecked === "function" && E.q("#txt2img_hr")) inputAccordionChecked("txt2img_hr", true);
        E.setNumber("txt2img_hr_scale", 2);
        E.setNumber("txt2img_hr_resize_x", 0);
        E.setNumber("txt2img_hr_resize_y", 0);
    }

    /** Set the generation's size; past the size sliders' maximum, txt2img draws half and hires-fixes 2x. */
    part.setSize = function(w, h) {
        var input = E.q("#" + this.tab + "_width input[type=number]");
        var max = input ? parseFloat(input.getAttribute("max")) || Infinity : Infinity;
        this.note = "";
        if (w <= max && h <= max) {
            if (this.tab === "img2img") this.selectResizeTab("Resize to");
            E.setNumber(this.tab + "_width", w);
            E.setNumber(this.tab + "_height", h);
        } else if (this.tab === "txt2img" && w / 2 <= max && h / 2 <= max && (w / 2) % 8 === 0 && (h / 2) % 8 === 0) {
            hiresFix2x(w / 2, h / 2);
            this.note = w + "\u00d7" + h + " is past the size sliders: " + (w / 2) + "\u00d7" + (h / 2) + " with hires fix 2x instead.";
        } else {
            this.note = w + "\u00d7" + h + " is past the size sliders (" + max + " px); use Resize by or hires fix.";
        }
        if (this.refreshView()) this.render();
        else this.render();
    };

    part.selectResizeTab = function(label) {
        var buttons = E.app().querySelectorAll("#img2img_tabs_resize > .tab-nav > button, #img2img_tabs_resize .tab-nav button");
        for (var i = 0; i < buttons.length; i++) {
            if (buttons[i].textContent.trim() === label) {
                if (!buttons[i].classList.contains("selected")) buttons[i].click();
                return true;
            }
        }
        return false;
    };

    /** One click: the size of an upscale (txt2img: hires fix; img2img: the upscale section) and the upscale presets' tile grid. */
    part.upscale = function(key) {
        var target = UPSCALE_TARGETS[key], note = "";
        if (this.tab === "txt2img") {
            if (target) hiresFix2x(target[0] / 2, target[1] / 2);
            else hiresFix2x(null, null);
            var first = this.readView().first;
            note = "Hires fix 2x: " + first.width + "\u00d7" + first.height + " \u2192 " + (first.width * 2) + "\u00d7" + (first.height * 2) + ".";
        } else { // img2img: the preset's upscale section (the engine upscales the source once)
            var choice = UPSCALE_BUTTON_CHOICES[key], set = Object.assign({}, MoDCore.UPSCALE_PRESETS[choice]);
            if (target) set.fit = "crop"; // a fixed size fills the frame whatever the source's aspect ratio
            set.controlnet_tile = CONTROLNET_TILE[key] || ""; // each button is a whole recipe
            this.dispatch({type: "upscale", upscale: set, choice: choice});
            note = "Upscale: " + choice + (target ? ", fit crop" : "") + (set.controlnet_tile ? ", ControlNet tile." : ".");
        }
        var mode = this.state.preset.regions && this.state.preset.regions.length ? "both" : "tiles";
        this.dispatch({type: "mode", mode: mode, tiles: UPSCALE_GRID});
        this.dispatch({type: "tiles", tiles: UPSCALE_GRID});
        if (this.tab === "txt2img") this.dispatch({type: "passes", passes: "both"});
        this.commit(null);
        this.syncControls();
        this.note = note + " Tile grid 768\u00d7768 px, overlap 128 px, batch auto.";
        this.render();
    };

    part.exportJson = function() {
        var text = MoDCore.serialise(this.state.preset);
        var name = (this.state.preset.name || "mixture-of-diffusers").replace(/[^\w.\- ]+/g, "_").trim() || "preset";
        var a = E.make("a", {href: URL.createObjectURL(new Blob([text + "\n"], {type: "application/json"})), download: name + ".json"});
        document.body.appendChild(a);
        a.click();
        setTimeout(function() {
            URL.revokeObjectURL(a.href);
            a.remove();
        }, 1000);
    };
})();
