/*
 * Mixture of Diffusers, region editor: the panel around the canvas. build() makes the editor's
 * elements (toolbar, canvas stage, fields of the selected region, region list, stats, messages);
 * the render* methods keep their text in step with the state: the readout of the box under edit,
 * the upscale note, the fields, the list, a line per pass (tiles, real overlaps, model calls,
 * a memory estimate), the "auto" tile and batch choice and the messages.
 *
 * Load order: none needed (the WebUI loads javascript/*.js as classic scripts in sorted name
 * order). This file only registers its part, make() and excerpt() at load time; MoDCore and
 * the other parts' helpers (MoDEditor.rgb, isObject) are reached when the methods run.
 */
(function() {
    "use strict";

    var E = window.MoDEditor = window.MoDEditor || {parts: {}};
    var part = E.parts.panel = {};

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

    function gib(bytes) {
        return (bytes / Math.pow(2, 30)).toFixed(1) + " GiB";
    }

    function excerpt(text, n) {
        text = (text || "").replace(/\s+/g, " ").trim();
        return text.length > n ? text.slice(0, n - 1) + "\u2026" : text;
    }

    E.make = make;
    E.excerpt = excerpt;

    part.build = function() {
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
        // Tooltips and limits from the preset's field table (MoDCore.field / fieldTitle).
        var attrs = function(path, step, extra) {
            var f = MoDCore.field(path);
            return Object.assign({type: "number", step: step, "data-field": path.split(".").pop(), max: String(f.max),
                min: String(f.exclusiveMin ? step : f.min)}, extra); // an open minimum: one step above it
        };
        field("Prompt", make("textarea", {rows: "2", "data-field": "prompt", placeholder: "empty: the main prompt"}), true,
            MoDCore.fieldTitle("regions[].prompt"));
        field("Negative prompt", make("textarea", {rows: "1", "data-field": "negative_prompt", placeholder: "empty: the main negative prompt"}), true,
            MoDCore.fieldTitle("regions[].negative_prompt"));
        field("Prompt mode", make("select", {"data-field": "prompt_mode"}, MoDCore.field("regions[].prompt_mode").options.map(function(o) {
            return make("option", {value: o, text: o});
        })), false, MoDCore.fieldTitle("regions[].prompt_mode"));
        field("CFG scale", make("input", attrs("regions[].cfg_scale", "0.5", {placeholder: "main"})), false,
            MoDCore.fieldTitle("regions[].cfg_scale", "Empty uses the main CFG scale."));
        field("Weight", make("input", attrs("regions[].weight", "0.1", {min: "0.01"})), false, MoDCore.fieldTitle("regions[].weight"));
        field("Seed", make("input", attrs("regions[].seed", "1")), false, MoDCore.fieldTitle("regions[].seed"));
        this.list = make("ol", {className: "mod-list"});
        this.stats = make("div", {className: "mod-stats"});
        this.message = make("div", {className: "mod-message", hidden: ""});
        [this.toolbar, this.stage, this.readout, this.upscaleNote, this.fields, this.list, this.stats, this.message].forEach(function(el) {
            self.host.appendChild(el);
        });
        this.bindEditor();
    };

    part.renderReadout = function(preset) {
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
    part.renderUpscaleNote = function() {
        var up = this.upscaleInfo(), x = "\u00d7", text = "";
        if (up) {
            text = "Upscale with " + up.upscaler + ": ";
            if (up.error) text += up.error;
            else if (up.source) text += "source " + up.source.width + x + up.source.height + " \u2192 target " + up.width + x + up.height + " (" + up.fit + ")";
            else if (up.width) text += "target " + up.width + x + up.height + " (" + up.fit + "); put an image into img2img to see how it fits";
            else text += up.scale + x + " the source; put an image into img2img to see the target";
            var tile = MoDCore.upscaleSettings(this.state.preset.upscale).controlnet_tile;
            if (tile) text += " \u00b7 ControlNet tile: " + tile + " (a ControlNet unit holds every tile to the upscaled image)";
        }
        if (this.upscaleNote.textContent !== text) this.upscaleNote.textContent = text;
        this.upscaleNote.hidden = !text;
    };

    part.renderFields = function(force) {
        var sel = this.state.selected, regions = this.state.preset.regions || [];
        if (sel < 0 || sel >= regions.length || this.state.error) {
            this.fields.hidden = true;
            return;
        }
        this.fields.hidden = false;
        var r = MoDCore.fullRegion(regions[sel]), b = this.boxes()[sel], active = document.activeElement;
        this.fields.style.setProperty("--mod-region-colour", E.rgb(this.colourOf(sel)));
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

    part.renderList = function() {
        var self = this, regions = this.state.preset.regions || [], sel = this.state.selected;
        var html = regions.map(function(r, i) {
            var c = self.colourOf(i), bits = [];
            if (r.cfg_scale !== null && r.cfg_scale !== undefined) bits.push("CFG " + r.cfg_scale);
            if (r.weight !== undefined && r.weight !== 1) bits.push("weight " + r.weight);
            if (r.seed !== undefined && r.seed !== -1) bits.push("seed " + r.seed);
            if (r.prompt_mode === "append") bits.push("append");
            return "<li data-index=\"" + i + "\" class=\"mod-item" + (i === sel ? " mod-selected" : "") + "\">" +
                "<span class=\"mod-swatch\" style=\"background:" + E.rgb(c) + "\"></span><b>" + (i + 1) + "</b> " +
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

    /** One pass of the job (`job`: MoDCore.resolveAuto's, its "auto" sizes chosen) with the estimate by `model`. */
    function passLine(name, job, w, h, model) {
        var plan = job.problems ? job : MoDCore.buildPlan(job.preset, w, h);
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
        var est = MoDCore.estimateCost(plan, model);
        parts.push("\u2248 " + est.seconds.toFixed(2) + " s/step, peak \u2248 " + gib(est.bytes) + " (estimate)");
        return parts.join(" \u00b7 ");
    }

    /** A line per pass, the "auto" choice (`job`, the canvas's resolveJob) and the cost model's formula. */
    part.renderStats = function(job) {
        var preset = this.previewPreset(), v = this.state.view, passes = preset.passes || "both", lines = [], m = this.costModel();
        if (this.hiresView) {
            lines.push(passes === "hires" ? "First pass " + v.width + "\u00d7" + v.height + ": not mixed (passes: hires)" : passLine("First pass", job, v.width, v.height, m));
            lines.push(passes === "first" ? "Hires pass " + this.hiresView.width + "\u00d7" + this.hiresView.height + ": not mixed (passes: first)" :
                passLine("Hires pass", job, this.hiresView.width, this.hiresView.height, m));
        } else {
            lines.push(passLine("Canvas", job, v.width, v.height, m));
        }
        var auto = job.note ? "<div class=\"mod-auto\">" + escapeHtml(job.note) + "</div>" : "";
        this.stats.innerHTML = lines.map(function(l) { return "<div>" + escapeHtml(l) + "</div>"; }).join("") + auto +
            "<div class=\"mod-formula\" title=\"" + escapeHtml(m.source) + "\">Time and peak memory of sampling (one image, not VAE decoding) " +
            "predicted by the cost model " + escapeHtml(m.name) + ", fitted to model calls measured on that device: " + gib(m.weightsBytes) +
            " of weights + " + (m.rowCellBytes / 1024).toFixed(1) + " KiB \u00d7 crop latent cells \u00d7 crops per call \u00d7 2 (cond + uncond) " +
            "for the largest call. Other devices, precisions and attention kernels differ.</div>";
    };

    part.renderMessage = function() {
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
        if (!s.error && this.tab === "txt2img" && E.isObject(p.upscale)) {
            msgs.push("The upscale section works in img2img only (txt2img refuses it): use hires fix here, or remove it from the JSON.");
        }
        var html = msgs.map(function(m) { return "<div>" + m + "</div>"; }).join("");
        if (html !== this.messageHtml) {
            this.message.innerHTML = html;
            this.messageHtml = html;
        }
        this.message.hidden = !msgs.length;
    };
})();
