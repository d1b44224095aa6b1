/*
 * Mixture of Diffusers, region editor: pointer and keys. Drag on the canvas to draw, move and
 * resize regions (Ctrl/Alt+drag draws over others); arrow keys nudge the selected region, Delete
 * removes it, Page Up/Down reorder, Tab walks the regions; the toolbar, the region list and the
 * fields of the selected region (prompt, CFG scale, weight, seed, box).
 *
 * Load order: none needed (the WebUI loads javascript/*.js as classic scripts in sorted name
 * order). This file only registers its part at load time; MoDCore and MoDEditor.HANDLE (of the
 * canvas part) are read when the methods run.
 */
(function() {
    "use strict";

    var E = window.MoDEditor = window.MoDEditor || {parts: {}};
    var part = E.parts.input = {};

    /** Listen to the editor's own elements (made by build()). */
    part.bindEditor = function() {
        var self = this;
        var onAct = function(e) { // the toolbar's buttons and the message's inline ones
            var b = e.target.closest("[data-act]");
            if (b) self.act(b.getAttribute("data-act"));
        };
        this.toolbar.addEventListener("click", onAct);
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
        this.message.addEventListener("click", onAct);
    };

    // ---------------------------------------------------------------- toolbar

    part.act = function(what) {
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

    // ---------------------------------------------------------------- mouse and keyboard

    part.toImage = function(e) {
        var r = this.canvas.getBoundingClientRect();
        return {x: (e.clientX - r.left) / this.k, y: (e.clientY - r.top) / this.k};
    };

    part.pointerDown = function(e) {
        if (e.button !== 0 || this.state.error || !this.k) return;
        var pt = this.toImage(e), boxes = this.boxes();
        var hit = MoDCore.hitTest(boxes, pt.x, pt.y, this.state.selected, (E.HANDLE + 2) / this.k);
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

    part.pointerMove = function(e) {
        var pt = this.toImage(e), d = this.drag, v = this.state.view;
        if (!d) {
            if (this.state.error || !this.k) return;
            var hit = MoDCore.hitTest(this.boxes(), pt.x, pt.y, this.state.selected, (E.HANDLE + 2) / this.k);
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

    part.pointerUp = function(e, cancelled) {
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

    part.keyDown = function(e) {
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

    part.fieldInput = function(e, final) {
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
})();
