/*
 * Mixture of Diffusers: the region editor's link to the WebUI page.
 *
 * The whole configuration is the preset JSON in the panel's textbox (#mod_<tab>_config). The
 * editor (mixture_of_diffusers_editor_*.js) draws it on a canvas, lets the user edit it with
 * the mouse and keyboard, keeps the panel's gradio controls and the JSON in step both ways, and
 * writes the JSON back with the WebUI's updateInput(). The pure parts (geometry, planner,
 * reducer) are in mixture_of_diffusers_core.js (MoDCore). This file is the glue: it finds the
 * WebUI's elements, reads the generation's size from the page, polls what gradio changes without
 * an event, dispatches input events to gradio's inputs, and starts an editor per tab from
 * onUiLoaded.
 *
 * Globals: `MoD` (the WebUI's gradio events for the JSON and the Upscaler call
 * MoD.configChanged and MoD.upscalerChanged) and `MoDEditor`, the editor's parts.
 *
 * Load order: none needed. The WebUI loads javascript/*.js as classic scripts in sorted name
 * order, so this file runs before the core and the editor's parts; it touches them only in
 * setup(), which onUiLoaded calls once every script has loaded.
 */
(function() {
    "use strict";

    var E = window.MoDEditor = window.MoDEditor || {parts: {}};
    var part = E.parts.webui = {};
    var TABS = ["txt2img", "img2img"];
    var POLL_MS = 400;
    var PARTS = ["model", "panel", "canvas", "input", "controls"]; // mixture_of_diffusers_editor_<part>.js
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

    /** The img2img source image shown under the editor (the WebUI's own lookup), if any. */
    function sourceImage() {
        var img = q("#mode_img2img > div[style=\"display: block;\"] img") || q("#img2img_image img");
        return img && img.complete && img.naturalWidth > 0 ? img : null;
    }

    Object.assign(E, {app: app, q: q, num: num, push: push, setNumber: setNumber, setRadio: setRadio, sourceImage: sourceImage});

    part.id = function(name) {
        return "mod_" + this.tab + "_" + name;
    };

    part.textarea = function() {
        return q("#" + this.id("config") + " textarea");
    };

    /** Redraw when the stage changes size (an accordion opens); poll what changes without an event. */
    part.watch = function() {
        var self = this;
        if (typeof ResizeObserver === "function") {
            this.resizeObserver = new ResizeObserver(function() { self.render(); });
            this.resizeObserver.observe(this.stage);
        }
        this.poller = setInterval(function() { self.poll(); }, POLL_MS);
    };

    part.poll = function() {
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
    part.upscaleInfo = function() {
        var u = this.tab === "img2img" && this.state ? this.state.preset.upscale : null;
        if (!E.isObject(u)) return null;
        var s = MoDCore.upscaleSettings(u), img = sourceImage();
        if (img) {
            var w = img.naturalWidth, h = img.naturalHeight;
            return Object.assign({source: {width: w, height: h}, upscaler: s.upscaler}, MoDCore.upscaleTarget(u, w, h));
        }
        if (s.width && s.height) return {source: null, upscaler: s.upscaler, width: s.width, height: s.height, fit: s.fit};
        return {source: null, upscaler: s.upscaler, scale: s.scale};
    };

    /** The canvas the generation will have: first pass and (txt2img with hires fix) the hires pass. */
    part.readView = function() {
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

    part.refreshView = function() {
        var v = this.readView(), s = this.state.view, h = this.hiresView;
        var same = s.width === v.first.width && s.height === v.first.height &&
            JSON.stringify(h) === JSON.stringify(v.hires);
        if (same) return false;
        this.dispatch({type: "view", width: v.first.width, height: v.first.height});
        this.hiresView = v.hires;
        return true;
    };

    // ------------------------------------------------------------------ set-up

    function setup() {
        var missing = PARTS.filter(function(p) { return !E.parts[p]; }).map(function(p) { return "mixture_of_diffusers_editor_" + p + ".js"; });
        if (typeof MoDCore === "undefined") missing.unshift("mixture_of_diffusers_core.js");
        if (missing.length) {
            console.warn("Mixture of Diffusers: " + missing.join(", ") + " did not load; the region editor is off.");
            return;
        }
        TABS.forEach(function(tab) {
            if (editors[tab]) return;
            var host = q("#mod_" + tab + "_editor .mod-editor");
            if (host) editors[tab] = E.create(tab, host);
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
