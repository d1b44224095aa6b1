/*
 * Mixture of Diffusers, region editor: the model. The Editor of one tab, its state (MoDCore's
 * reducer over the preset JSON) and the round trip of that JSON: load it from the panel's
 * textbox, commit edits back to it (debounced while typing or nudging), follow it when it
 * changes outside the editor.
 *
 * Load order: none needed. The WebUI loads javascript/*.js as classic scripts in sorted name
 * order; this file only registers its part at load time. The Editor's prototype is put together
 * from every file's part (MoDEditor.parts) on the first MoDEditor.create(), from onUiLoaded on,
 * when all files, MoDCore included, have loaded.
 */
(function() {
    "use strict";

    var E = window.MoDEditor = window.MoDEditor || {parts: {}};
    var part = E.parts.model = {};
    var PUSH_DELAY_MS = 300;

    /** A preset section such as upscale: a plain object (null, absent and arrays are not one). */
    E.isObject = function(v) {
        return v !== null && typeof v === "object" && !Array.isArray(v);
    };

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
        this.watch();
    }

    var assembled = false;

    /** The editor of one tab; the first call puts the prototype together from the parts. */
    E.create = function(tab, host) {
        if (!assembled) {
            Object.keys(E.parts).forEach(function(name) {
                var methods = E.parts[name];
                Object.keys(methods).forEach(function(m) {
                    if (Object.prototype.hasOwnProperty.call(Editor.prototype, m)) throw new Error("Editor." + m + " is defined twice");
                    Editor.prototype[m] = methods[m];
                });
            });
            assembled = true;
        }
        return new Editor(tab, host);
    };

    part.dispatch = function(action) {
        this.state = MoDCore.reduce(this.state, action);
        return this.state;
    };

    /** Commit: write the JSON into the textbox (updateInput tells gradio) and redraw. */
    part.commit = function(action, delayed) {
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

    part.pushNow = function() {
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
        E.push(ta);
    };

    part.load = function(text) {
        this.lastText = text;
        this.dispatch({type: "load", text: text});
    };

    /** The JSON changed outside the editor (a preset, a paste, an edit of the text): follow it. */
    part.configChanged = function(text) {
        if (typeof text !== "string" || text === this.lastText) return;
        clearTimeout(this.pushTimer); // the new text wins over an edit not yet written
        this.pushTimer = null;
        this.load(text);
        this.refreshView(); // an upscale section sets the canvas
        this.syncControls();
        this.renderFields(true);
        this.render();
    };

    part.currentTiles = function() {
        return MoDCore.tileSettings(this.state.preset.tiles || this.state.stash.tiles || MoDCore.DEFAULT_TILES);
    };

    /**
     * What "auto" tile and batch sizes are chosen for ({model, bytes, source}, an auto_plan Budget):
     * the host's cost model and memory, which the panel puts on the editor's element
     * (lib_mixture_webui/panel.py: data-auto-model, "" where none is measured for the host, as the
     * job then takes the fixed defaults; data-auto-budget; data-auto-source), else the default cost
     * model and 8 GiB. The job chooses again from the memory free when it starts.
     */
    part.autoBudget = function() {
        var name = this.host.getAttribute("data-auto-model");
        if (name === null) return MoDCore.editorBudget();
        var source = this.host.getAttribute("data-auto-source") || "the panel";
        var model = name ? MoDCore.costModel(name) : null;
        if (name && !model) source = "cost model " + name + " is unknown to the editor";
        return {model: model, bytes: +this.host.getAttribute("data-auto-budget") || 0, source: source};
    };

    /** The cost model of the estimates: the host's, else the default one. */
    part.costModel = function() {
        return this.autoBudget().model || MoDCore.COST_MODEL;
    };

    /** [width, height] px of each pass `preset` mixes (lib_mixture_webui/job.py mixed_sizes), else the first pass's. */
    part.mixedSizes = function(preset) {
        var passes = preset.passes || "both", v = this.state.view, h = this.hiresView, out = [];
        if (passes !== "hires") out.push([v.width, v.height]);
        if (h && passes !== "first") out.push([h.width, h.height]);
        return out.length ? out : [[v.width, v.height]];
    };

    /** The job's "auto" choice for `preset` (MoDCore.resolveAuto: made on the largest mixed pass, it holds for every pass). */
    part.resolveJob = function(preset) {
        return MoDCore.resolveAuto(preset, this.mixedSizes(preset), this.autoBudget());
    };

    part.boxes = function() {
        return MoDCore.snappedBoxes(this.state.preset, this.state.view);
    };

    /** The preset as drawn: the drag in progress applied. */
    part.previewPreset = function() {
        var d = this.drag;
        if (!d || !d.moved || !d.box) return this.state.preset;
        var s = MoDCore.reduce(this.state, d.kind === "create" ? {type: "add", box: d.box} : {type: "setBox", index: d.index, box: d.box});
        return s.preset;
    };
})();
