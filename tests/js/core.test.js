// Unit tests of javascript/mixture_of_diffusers_core.js (pure: geometry, planner, weights,
// hit testing, the state reducer, JSON round trip). Planner parity: the same cases through
// lib_mixture (python3 tests/js/python_reference.py) and through the JavaScript port.
//
//     node --test tests/js/
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const path = require("node:path");
const fs = require("node:fs");
const {execFileSync} = require("node:child_process");

const ROOT = path.resolve(__dirname, "..", "..");
const core = require(path.join(ROOT, "javascript", "mixture_of_diffusers_core.js"));

const PYTHON = process.env.MOD_PYTHON || "python3";
const REFERENCE = path.join(__dirname, "python_reference.py");

function python(args, input) {
    return JSON.parse(execFileSync(PYTHON, [REFERENCE, ...args], {input, maxBuffer: 64 << 20, encoding: "utf8"}));
}

let reference = null;
function ref() {
    if (!reference) reference = python([]);
    return reference;
}

function box(x, y, width, height) {
    return {x, y, width, height};
}

function bundled() {
    const dir = path.join(ROOT, "presets");
    return fs.readdirSync(dir).filter((f) => f.endsWith(".json")).sort()
        .map((f) => ({name: f.slice(0, -5), text: fs.readFileSync(path.join(dir, f), "utf8")}));
}

// ---------------------------------------------------------------- parity with Python

test("snapBox matches geometry.snap_box on 400 random boxes", () => {
    for (const c of ref().snap) {
        const b = core.snapBox(...c.args);
        assert.deepEqual([b.x, b.y, b.width, b.height], c.expect, `snapBox(${c.args})`);
    }
});

test("planAxis matches planner.plan_axis (fewest tiles, even integer starts, flush edges)", () => {
    assert.ok(ref().axes.length > 1000);
    for (const c of ref().axes) {
        const a = core.planAxis(...c.args);
        assert.equal(a.size, c.size, `size of planAxis(${c.args})`);
        assert.deepEqual(a.starts, c.starts, `starts of planAxis(${c.args})`);
    }
});

test("planOn matches auto_plan.plan_on (no budget) for bundled presets and 300 random presets", () => {
    const plans = ref().plans;
    assert.ok(plans.length >= 350);
    let compared = 0, misfits = 0;
    for (const c of plans) {
        const preset = JSON.parse(JSON.stringify(c.preset));
        const got = core.planOn(preset, c.width, c.height, null);
        const label = `${c.name} on ${c.width}x${c.height}`;
        if (c.problems) {
            assert.ok(got.problems && got.problems.length, `${label}: Python refused it (${c.problems}), JS planned it`);
            misfits += 1;
            continue;
        }
        assert.ok(!got.problems, `${label}: JS refused it: ${got.problems}`);
        const s = core.planSummary(got), e = c.expect;
        assert.deepEqual(s.canvas, e.canvas, `${label}: canvas`);
        assert.deepEqual(s.tile_grid, e.tile_grid, `${label}: tile grid`);
        assert.deepEqual(s.tiles, e.tiles, `${label}: tiles`);
        assert.deepEqual(s.regions, e.regions, `${label}: regions`);
        assert.equal(s.crops, e.crops, `${label}: crops`);
        assert.equal(s.batch_size, e.batch_size, `${label}: batch size`);
        assert.equal(s.model_calls_per_step, e.model_calls_per_step, `${label}: model calls per step`);
        assert.ok(Math.abs(s.redundancy - e.redundancy) < 1e-9, `${label}: redundancy ${s.redundancy} vs ${e.redundancy}`);
        const est = core.estimateCost(got);
        assert.ok(Math.abs(est.seconds / e.estimate[0] - 1) < 1e-9 && Math.abs(est.bytes / e.estimate[1] - 1) < 1e-9,
            `${label}: estimate ${est.seconds} s ${est.bytes} B vs ${e.estimate}`);
        compared += 1;
    }
    assert.ok(compared >= 340 && misfits >= 3, `compared ${compared}, misfits ${misfits}`);
});

test("profile matches weights.profile (gaussian and constant)", () => {
    for (const c of ref().profiles) {
        const got = core.profile(...c.args);
        assert.equal(got.length, c.expect.length);
        got.forEach((v, i) => {
            const e = c.expect[i];
            assert.ok(Math.abs(v - e) <= 1e-12 * Math.max(1, Math.abs(e)), `profile(${c.args})[${i}] = ${v}, Python ${e}`);
        });
    }
});

test("upscaleTarget matches upscale.target_size + fit_geometry (sizes, geometry, refusals)", (t) => {
    const cases = ref().upscales;
    if (!cases) return t.skip(`lib_mixture.upscale needs numpy and Pillow in ${PYTHON}`);
    let refused = 0;
    for (const c of cases) {
        const got = core.upscaleTarget(c.upscale, ...c.src);
        const label = `${JSON.stringify(c.upscale)} on ${c.src.join("x")}`;
        if (c.problems) {
            assert.equal(got.error, c.problems[0], label);
            refused += 1;
            continue;
        }
        assert.equal(got.error, undefined, `${label}: ${got.error}`);
        assert.deepEqual({width: got.width, height: got.height, geometry: got.geometry}, c.expect, label);
    }
    assert.ok(cases.length > 1000 && refused > 50, `${cases.length} cases, ${refused} refused`);
});

// A Budget of the reference's JSON: the model by name (MoDCore reads the dtype-scaled names too).
function budgetOf(b) {
    if (b === null) return null;
    const model = b.model === null ? null : core.costModel(b.model);
    assert.ok(b.model === null || model, `no cost model ${b.model} in MoDCore`);
    return {model, bytes: b.bytes, source: b.source};
}

test("resolveAuto matches auto_plan.resolve: the presets, the choice, the fits and the note (400 random jobs)", () => {
    const cases = ref().autos;
    const seen = {refused: 0, fits: 0, over: 0, fixedDefault: 0, nothing: 0, models: new Set(), hires: 0, regions: 0};
    for (const c of cases) {
        const label = `${JSON.stringify(c.preset)} on ${JSON.stringify(c.canvases)} within ${JSON.stringify(c.budget)}`;
        const got = core.resolveAuto(JSON.parse(JSON.stringify(c.preset)), c.canvases, budgetOf(c.budget));
        if (c.problems) {
            assert.ok(got.problems && got.problems.length, `${label}: Python refused it (${c.problems}), JS chose`);
            if (c.problems[0].startsWith("tiles.overlap:")) assert.deepEqual(got.problems, c.problems, label);
            seen.refused += 1;
            continue;
        }
        assert.equal(got.problems, undefined, `${label}: JS refused it: ${got.problems}`);
        const e = c.expect;
        assert.equal(got.note, e.note, `${label}: note`);
        assert.deepEqual(got.choice, e.choice, `${label}: choice`);
        assert.equal(got.fits, e.fits, `${label}: fits`);
        assert.deepEqual(got.preset, e.preset, `${label}: chosen preset`);
        assert.deepEqual(got.shown, e.shown, `${label}: shown preset`);
        if (!e.note) seen.nothing += 1;
        else if (!e.choice) seen.fixedDefault += 1;
        else if (e.fits) seen.fits += 1;
        else seen.over += 1;
        if (c.budget && c.budget.model) seen.models.add(c.budget.model);
        if (c.canvases.length > 1) seen.hires += 1;
        if ((c.preset.regions || []).length && e.choice) seen.regions += 1;
    }
    assert.ok(cases.length >= 400 && seen.refused >= 10 && seen.fits >= 100 && seen.over >= 20 && seen.fixedDefault >= 20 &&
        seen.nothing >= 20 && seen.models.size >= 3 && seen.hires >= 50 && seen.regions >= 20, JSON.stringify({...seen, models: [...seen.models]}));
});

test("tileProblems gives parse_preset's messages for the tiles section; canonical reads it as Preset.to_dict (600 sections)", () => {
    let refused = 0, mixed = 0;
    for (const c of ref().tile_checks) {
        const label = JSON.stringify(c.tiles);
        assert.deepEqual(core.tileProblems(JSON.parse(label)), c.problems, label);
        if (c.problems.length) {
            refused += 1;
            if (c.problems.some((p) => p.includes("beside \"auto\""))) mixed += 1;
            continue;
        }
        assert.deepEqual(core.canonical({version: 1, tiles: JSON.parse(label)}).tiles, c.expect, `${label}: canonical`);
    }
    assert.ok(refused >= 200 && mixed >= 50 && ref().tile_checks.length - refused >= 150, `${refused} refused, ${mixed} mixed`);
});

test("buildPlan refuses unresolved \"auto\"; planOn resolves it first (no budget: 768 px, batch 4)", () => {
    const grid = {version: 1, tiles: {overlap: 64}};
    assert.match(core.buildPlan(grid, 2048, 2048).problems[0], /"auto" tile or batch sizes are chosen for a job first/);
    const batchOnly = {version: 1, tiles: {width: 512, height: 512, batch_size: "auto"}};
    assert.ok(core.buildPlan(batchOnly, 2048, 2048).problems);
    assert.equal(core.buildPlan(batchOnly, 2048, 2048, 3).batchSize, 3, "a batch given to buildPlan replaces auto");
    const plan = core.planOn(grid, 2048, 2048, null);
    assert.equal(plan.tiles.tileWidth, 768);
    assert.equal(plan.batchSize, 4);
    assert.equal(plan.auto.note, "auto: 768x768 px tiles, batch 4 (the fixed default: no memory budget was given)");
    const chosen = core.planOn(grid, 2048, 2048, core.editorBudget());
    assert.match(chosen.auto.note, /^auto: \d+x\d+ px tiles \(\d+ of them\), batch \d+: [\d.]+ s\/step and [\d.]+ GiB predicted by sd15-fp16-sdpa-h200 for 8\.00 GiB \(the editor's default, 8 GiB\): the fastest of \d+ grids and batches that fit$/);
    assert.equal(chosen.batchSize, chosen.auto.choice.batchSize);
    assert.deepEqual(chosen.auto.shown.tiles.batch_size, "auto", "the infotext keeps the batch as asked");
});

test("pyFixed rounds halves to even as Python's format does; costModel reads for_host's dtype-scaled names", () => {
    assert.equal(core.pyFixed(0.0625, 3), "0.062");
    assert.equal(core.pyFixed(0.1875, 3), "0.188");
    assert.equal(core.pyFixed(2.125, 2), "2.12");
    assert.equal(core.pyFixed(2.375, 2), "2.38");
    assert.equal(core.pyFixed(1.005, 2), "1.00", "1.005 is a little below the half in binary");
    assert.equal(core.pyFixed(8, 2), "8.00");
    assert.equal(core.pyFixed(0.5, 0), "0");
    const base = core.costModel("sd15-fp16-sdpa-h200"), scaled = core.costModel("sd15-fp16-sdpa-h200 (memory x2 for fp32)");
    assert.equal(base, core.COST_MODEL);
    assert.equal(scaled.weightsBytes, 2 * base.weightsBytes);
    assert.equal(scaled.rowCellBytes, 2 * base.rowCellBytes);
    assert.equal(scaled.call, base.call, "time kept");
    assert.equal(scaled.dtype, "fp32");
    assert.equal(core.costModel("nope"), null);
    assert.equal(core.costModel("nope (memory x2 for fp32)"), null);
});

test("rank, within and tileGrids: the choice the CLI's --auto makes (lib_mixture.cost.choose)", () => {
    const m = core.COST_MODEL;
    const grids = core.tileGrids(3840, 2160, 64, [512, 576, 640, 704, 768]);
    assert.deepEqual(grids.map((g) => g.tileWidth), [512, 576, 640, 704, 768]);
    assert.deepEqual(grids[0], {tileWidth: 512, tileHeight: 512, tiles: 45, groups: [[45, 4096]]});
    const ranked = core.rank(m, grids);
    for (let i = 1; i < ranked.length; i++) assert.ok(ranked[i - 1].seconds <= ranked[i].seconds);
    assert.ok(ranked.every((c) => c.batchSize === 1 || c.calls < core.rank(m, [grids.find((g) => g.tileWidth === c.tileWidth)],
        [c.batchSize - 1])[0].calls), "no batch that makes as many calls as one smaller");
    const fits = core.within(ranked, 4 * core.GIB);
    assert.ok(fits.length && fits.every((c) => c.peakBytes <= 4 * core.GIB));
    assert.deepEqual(core.tileGrids(512, 512, 64, [512, 576, 640]).length, 1, "clamped to the canvas: one grid");
    assert.deepEqual(core.tileGrids(4096, 4096, 600, [512, 640]).map((g) => g.tileWidth), [640], "the overlap does not fit 512 px");
});

test("the paper's 4K grid: 11 x 8 tiles of 640x480, overlaps 320 and 240 px", () => {
    const text = bundled().find((p) => p.name === "paper-fig8-4k-grid").text;
    const plan = core.planOn(JSON.parse(text), 3840, 2160, core.editorBudget());
    assert.equal(plan.tiles.tiles.length, 88);
    assert.deepEqual([...new Set(plan.tiles.overlapsX)], [320]);
    assert.deepEqual([...new Set(plan.tiles.overlapsY)], [240]);
});

// ---------------------------------------------------------------- JSON round trip

test("bundled presets: parse, serialise and Python's validator give back the same object", () => {
    const presets = bundled();
    const texts = presets.map((p) => core.serialise(core.parse(p.text).preset));
    const back = python(["--round-trip"], JSON.stringify(texts));
    const direct = python(["--round-trip"], JSON.stringify(presets.map((p) => p.text)));
    back.forEach((r, i) => {
        assert.ok(r.dict, `${presets[i].name}: ${r.problems}`);
        assert.deepEqual(r.dict, direct[i].dict, presets[i].name);
        assert.deepEqual(JSON.parse(texts[i]), r.dict, `${presets[i].name}: JS canonical form equals Preset.to_dict`);
    });
});

test("every state the reducer makes is a preset Python accepts, and canonical", () => {
    let s = core.initialState({width: 1024, height: 768});
    const states = [];
    const step = (a) => { s = core.reduce(s, a); states.push(s); };
    step({type: "mode", mode: "both"});
    step({type: "add", box: box(10, 20, 300, 200)});
    step({type: "add", box: box(500, 300, 400, 400)});
    step({type: "updateRegion", index: 0, fields: {prompt: "a \"quoted\" castle, ünïcode", negative_prompt: "fog", cfg_scale: "9.5", weight: "2", seed: "1234"}});
    step({type: "updateRegion", index: 1, fields: {cfg_scale: "", weight: "-3", seed: "abc", prompt_mode: "append"}});
    step({type: "tiles", tiles: {width: 770, height: 515, overlap: 99, batch_size: 7}});
    step({type: "tiles", tiles: {height: 0}});
    step({type: "tiles", tiles: {width: 600, batch_size: 0}});
    step({type: "tiles", tiles: {width: 0, overlap: 5000}});
    step({type: "tiles", tiles: {width: 520, height: 0}});
    step({type: "weights", kind: "constant"});
    step({type: "weights", kind: "gaussian", variance: 0.02});
    step({type: "passes", passes: "hires"});
    step({type: "nudge", index: 1, dx: 64, dy: -8});
    step({type: "reorder", index: 0, to: "front"});
    step({type: "mode", mode: "regions"});
    step({type: "upscale", upscale: {scale: 2}});
    step({type: "upscaleOptions", upscale: {upscaler: "R-ESRGAN 4x+", fit: "pad", guide_strength: "0.25"}});
    step({type: "upscale", upscale: {width: 3841, height: 2160, fit: "crop"}});
    step({type: "vae", tiling: "on", tile: 1000});
    step({type: "vae", tile: 0});
    const texts = states.map((st) => core.serialise(st.preset));
    const back = python(["--round-trip"], JSON.stringify(texts));
    back.forEach((r, i) => {
        assert.ok(r.dict, `state ${i}: ${r.problems}`);
        assert.deepEqual(JSON.parse(texts[i]), r.dict, `state ${i} is canonical`);
    });
    const last = JSON.parse(texts[texts.length - 1]);
    assert.equal(last.tiles, undefined);
    assert.equal(last.regions[1].prompt, "a \"quoted\" castle, ünïcode");
    assert.equal(last.regions[1].cfg_scale, 9.5);
    assert.equal(last.regions[0].cfg_scale, null);
    assert.equal(last.regions[0].weight, 1, "a weight <= 0 is refused");
    assert.equal(last.regions[0].seed, -1, "a seed that is not a number is refused");
    assert.equal(last.passes, "hires");
    assert.deepEqual(last.upscale, {upscaler: "R-ESRGAN 4x+", width: 3840, height: 2160, fit: "crop", guide_strength: 0.25});
    assert.deepEqual(last.vae, {tiling: "on", tile: null});
});

test("parse reports broken JSON and the reducer keeps the last good preset", () => {
    const s0 = core.initialState();
    assert.match(core.parse("{nope").error, /not valid JSON/);
    assert.match(core.parse("[1]").error, /JSON object/);
    assert.match(core.parse('{"version": 1, "regions": [{"x": 1}]}').error, /regions\[0\]/);
    const s1 = core.reduce(s0, {type: "load", text: "{nope"});
    assert.equal(s1.preset, s0.preset);
    assert.match(s1.error, /not valid JSON/);
    const s2 = core.reduce(s1, {type: "load", text: bundled()[0].text});
    assert.equal(s2.error, null);
    assert.equal(s2.mode, "regions");
});

test("a typo in any section survives the editor's edits, for the validator to report", () => {
    const text = JSON.stringify({version: 1, canvas: {width: 512, height: 512, widht: 1},
        tiles: {width: 1024, height: 1024, ovrlap: 256}, weights: {kind: "gaussian", varaince: 0.5},
        vae: {tilling: "on"}, upscale: {scael: 2}, regions: [{x: 0, y: 0, width: 64, height: 64, promt: "a"}]});
    let s = core.reduce(core.initialState(), {type: "load", text: text});
    s = core.reduce(s, {type: "passes", passes: "first"});
    s = core.reduce(s, {type: "tiles", tiles: {width: 768}});
    const p = JSON.parse(core.serialise(s.preset));
    assert.equal(p.canvas.widht, 1);
    assert.equal(p.tiles.ovrlap, 256);
    assert.equal(p.weights.varaince, 0.5);
    assert.equal(p.vae.tilling, "on");
    assert.equal(p.upscale.scael, 2);
    assert.equal(p.regions[0].promt, "a");
});

// ---------------------------------------------------------------- snapping and boxes

test("nearest rounds halves up, like Python's _nearest", () => {
    assert.equal(core.nearest(4), 8);
    assert.equal(core.nearest(3.999), 0);
    assert.equal(core.nearest(-4), 0);
    assert.equal(core.nearest(-4.01), -8);
    assert.equal(core.nearest(12, 8), 16);
    assert.equal(core.roundTo(3), 8);
    assert.equal(core.roundTo(771), 768);
    assert.equal(core.roundTo(772), 776);
});

test("boxFromDrag normalises reversed drags, snaps edges and stays inside", () => {
    assert.deepEqual(core.boxFromDrag(300, 200, 10, 20, 512, 512), box(8, 24, 296, 176));
    assert.deepEqual(core.boxFromDrag(-50, -50, 1000, 1000, 512, 384), box(0, 0, 512, 384));
    assert.deepEqual(core.boxFromDrag(100, 100, 101, 101, 512, 512), box(104, 104, 8, 8), "never empty");
    assert.deepEqual(core.boxFromDrag(510, 510, 530, 530, 512, 512), box(504, 504, 8, 8));
});

test("moveBox keeps the size and the box inside the canvas", () => {
    assert.deepEqual(core.moveBox(box(64, 64, 128, 128), 13, -3, 512, 512), box(80, 64, 128, 128));
    assert.deepEqual(core.moveBox(box(64, 64, 128, 128), 1000, 1000, 512, 512), box(384, 384, 128, 128));
    assert.deepEqual(core.moveBox(box(64, 64, 128, 128), -1000, 0, 512, 512), box(0, 64, 128, 128));
});

test("resizeBox moves only the handle's edges and never inverts the box", () => {
    const b = box(64, 64, 128, 128);
    assert.deepEqual(core.resizeBox(b, "se", 30, 61, 512, 512), box(64, 64, 160, 192));
    assert.deepEqual(core.resizeBox(b, "nw", -70, -70, 512, 512), box(0, 0, 192, 192));
    assert.deepEqual(core.resizeBox(b, "e", -500, 0, 512, 512), box(64, 64, 8, 128));
    assert.deepEqual(core.resizeBox(b, "n", 0, 500, 512, 512), box(64, 184, 128, 8));
    assert.deepEqual(core.resizeBox(b, "s", 0, 5000, 512, 512), box(64, 64, 128, 448));
});

test("hitTest: handles of the selected box first, then the topmost box", () => {
    const boxes = [box(0, 0, 200, 200), box(100, 100, 200, 200)];
    assert.deepEqual(core.hitTest(boxes, 150, 150, -1), {kind: "region", index: 1});
    assert.deepEqual(core.hitTest(boxes, 50, 50, -1), {kind: "region", index: 0});
    assert.deepEqual(core.hitTest(boxes, 400, 400, -1), {kind: "none", index: -1});
    assert.deepEqual(core.hitTest(boxes, 198, 198, 0, 6), {kind: "handle", index: 0, handle: "se"});
    assert.deepEqual(core.hitTest(boxes, 100, 3, 0, 6), {kind: "handle", index: 0, handle: "n"});
    assert.deepEqual(core.hitTest(boxes, 103, 198, 1, 6), {kind: "handle", index: 1, handle: "w"});
    assert.deepEqual(core.hitTest(boxes, 200, 200, -1), {kind: "region", index: 1}, "edges are half-open");
});

// ---------------------------------------------------------------- reducer

function regionsOf(s) {
    return s.preset.regions.map((r) => [r.x, r.y, r.width, r.height]);
}

test("add, move, resize, nudge, delete", () => {
    let s = core.initialState({width: 512, height: 512});
    s = core.reduce(s, {type: "add", box: box(10, 10, 100, 100)});
    assert.deepEqual(regionsOf(s), [[8, 8, 104, 104]]);
    assert.equal(s.selected, 0);
    assert.equal(s.mode, "both", "drawing a region over a tile grid makes it 'both'");
    assert.deepEqual(s.preset.canvas, {width: 512, height: 512});
    s = core.reduce(s, {type: "setBox", index: 0, box: box(500, 500, 100, 100)});
    assert.deepEqual(regionsOf(s), [[504, 504, 8, 8]], "clamped to the canvas");
    s = core.reduce(s, {type: "setBox", index: 0, box: box(64, 64, 128, 128)});
    s = core.reduce(s, {type: "nudge", index: 0, dx: 8, dy: 0});
    s = core.reduce(s, {type: "nudge", index: 0, dx: 0, dy: -64});
    assert.deepEqual(regionsOf(s), [[72, 0, 128, 128]]);
    s = core.reduce(s, {type: "nudge", index: 0, dx: -640, dy: 0});
    assert.deepEqual(regionsOf(s), [[0, 0, 128, 128]]);
    s = core.reduce(s, {type: "add", box: box(200, 200, 64, 64)});
    s = core.reduce(s, {type: "delete", index: 0});
    assert.deepEqual(regionsOf(s), [[200, 200, 64, 64]]);
    assert.equal(s.selected, 0);
    s = core.reduce(s, {type: "delete", index: 0});
    assert.deepEqual(regionsOf(s), []);
    assert.equal(s.selected, -1);
    assert.equal(core.reduce(s, {type: "delete", index: 5}), s, "a bad index changes nothing");
});

test("no fixed limit on regions; duplicate; z-order", () => {
    let s = core.initialState({width: 1024, height: 1024});
    for (let i = 0; i < 40; i++) s = core.reduce(s, {type: "add", box: box(i * 16, i * 16, 64, 64), fields: {prompt: "r" + i}});
    assert.equal(s.preset.regions.length, 40);
    s = core.reduce(s, {type: "duplicate", index: 3});
    assert.equal(s.preset.regions.length, 41);
    assert.equal(s.preset.regions[40].prompt, "r3");
    assert.deepEqual(regionsOf(s)[40], [80, 80, 64, 64]);
    s = core.reduce(s, {type: "reorder", index: 0, to: "forward"});
    assert.equal(s.preset.regions[1].prompt, "r0");
    assert.equal(s.selected, 1);
    s = core.reduce(s, {type: "reorder", index: 1, to: "front"});
    assert.equal(s.preset.regions[40].prompt, "r0");
    s = core.reduce(s, {type: "reorder", index: 40, to: "back"});
    assert.equal(s.preset.regions[0].prompt, "r0");
    s = core.reduce(s, {type: "reorder", index: 5, to: "backward"});
    assert.equal(s.preset.regions[4].prompt, "r5");
    assert.equal(core.reduce(s, {type: "reorder", index: 0, to: "backward"}), s);
});

test("an edit on a preset drawn for another canvas rescales and snaps its boxes first", () => {
    const fig4 = bundled().find((p) => p.name === "paper-fig4-composition").text;
    let s = core.reduce(core.initialState({width: 704, height: 320}), {type: "load", text: fig4});
    assert.deepEqual(s.preset.canvas, {width: 1408, height: 640}, "loading changes nothing");
    const before = core.buildPlan(s.preset, 704, 320).regions.map((r) => r.box);
    s = core.reduce(s, {type: "updateRegion", index: 0, fields: {prompt: "x"}});
    assert.deepEqual(s.preset.canvas, {width: 1408, height: 640}, "text edits keep the boxes");
    s = core.reduce(s, {type: "nudge", index: 2, dx: 0, dy: 0});
    assert.deepEqual(s.preset.canvas, {width: 704, height: 320});
    assert.deepEqual(regionsOf(s), [[0, 0, 320, 320], [192, 0, 320, 320], [384, 0, 320, 320]]);
    const after = core.buildPlan(s.preset, 704, 320).regions.map((r) => r.box);
    assert.deepEqual(after, before, "the engine's boxes do not change");
    const frac = JSON.stringify({version: 1, units: "fraction", regions: [{x: 0.25, y: 0, width: 0.5, height: 1}]});
    s = core.reduce(core.reduce(core.initialState({width: 512, height: 256}), {type: "load", text: frac}),
        {type: "nudge", index: 0, dx: 8, dy: 0});
    assert.equal(s.preset.units, "px");
    assert.deepEqual(regionsOf(s), [[136, 0, 256, 256]]);
});

test("mode switches keep what they hide and give it back", () => {
    let s = core.initialState({width: 512, height: 512});
    assert.equal(s.mode, "tiles");
    s = core.reduce(s, {type: "add", box: box(0, 0, 256, 512)});
    s = core.reduce(s, {type: "mode", mode: "tiles"});
    assert.equal(s.preset.regions.length, 0);
    assert.equal(core.modeOf(s.preset), "tiles");
    s = core.reduce(s, {type: "mode", mode: "regions"});
    assert.equal(s.preset.tiles, undefined);
    assert.equal(s.preset.regions.length, 1, "regions come back");
    s = core.reduce(s, {type: "tiles", tiles: {width: 512}});
    assert.equal(s.preset.tiles, undefined, "tile settings wait in the stash in regions mode");
    s = core.reduce(s, {type: "mode", mode: "both"});
    assert.equal(s.preset.tiles.width, 512);
    assert.equal(s.mode, "both");
    s = core.reduce(s, {type: "mode", mode: "regions"});
    s = core.reduce(s, {type: "delete", index: 0});
    assert.equal(s.mode, "regions");
    assert.equal(core.modeOf(s.preset), "regions");
});

test("tile settings snap to 8 px and overlap stays below the tile", () => {
    let s = core.initialState({width: 2048, height: 2048});
    s = core.reduce(s, {type: "tiles", tiles: {width: 771, height: 13, overlap: 99, batch_size: 200}});
    assert.deepEqual(s.preset.tiles, {width: 768, height: 64, overlap: 56, batch_size: 64});
    s = core.reduce(s, {type: "tiles", tiles: {height: 515, overlap: 101}});
    assert.deepEqual(s.preset.tiles, {width: 768, height: 512, overlap: 104, batch_size: 64});
    s = core.reduce(s, {type: "tiles", tiles: {overlap: {x: 64, y: 32}}});
    assert.deepEqual(s.preset.tiles.overlap, {x: 64, y: 32});
    s = core.reduce(s, {type: "tiles", tiles: {batch_size: "abc"}});
    assert.equal(s.preset.tiles.batch_size, "auto", "not a number: the default");
});

test("tile sliders: 0 is \"auto\"; the sides are never one auto and one px", () => {
    let s = core.initialState({width: 2048, height: 2048});
    assert.deepEqual(s.preset.tiles, {width: "auto", height: "auto", overlap: 64, batch_size: "auto"}, "the table's defaults");
    s = core.reduce(s, {type: "tiles", tiles: {width: 515}});
    assert.deepEqual([s.preset.tiles.width, s.preset.tiles.height], [512, 512], "moved off 0: the height follows");
    s = core.reduce(s, {type: "tiles", tiles: {height: 640}});
    assert.deepEqual([s.preset.tiles.width, s.preset.tiles.height], [512, 640], "both px: each its own");
    s = core.reduce(s, {type: "tiles", tiles: {height: 0}});
    assert.deepEqual([s.preset.tiles.width, s.preset.tiles.height], ["auto", "auto"], "one set to 0: both auto");
    s = core.reduce(s, {type: "tiles", tiles: {height: 704}});
    assert.deepEqual([s.preset.tiles.width, s.preset.tiles.height], [704, 704]);
    s = core.reduce(s, {type: "tiles", tiles: {width: "auto"}});
    assert.deepEqual([s.preset.tiles.width, s.preset.tiles.height], ["auto", "auto"]);
    s = core.reduce(s, {type: "tiles", tiles: {overlap: 2000}});
    assert.equal(s.preset.tiles.overlap, 2000, "below an auto tile: checked when the side is chosen");
    s = core.reduce(s, {type: "tiles", tiles: {batch_size: 6}});
    assert.equal(s.preset.tiles.batch_size, 6);
    s = core.reduce(s, {type: "tiles", tiles: {batch_size: 0}});
    assert.equal(s.preset.tiles.batch_size, "auto");
    s = core.reduce(s, {type: "mode", mode: "regions"});
    s = core.reduce(s, {type: "mode", mode: "tiles", tiles: {width: 768, height: 768, overlap: 128, batch_size: "auto"}});
    assert.deepEqual(s.preset.tiles, {width: 768, height: 768, overlap: 128, batch_size: "auto"}, "the upscale buttons' grid");
    for (const text of [JSON.stringify({version: 1, tiles: {width: 512}}), JSON.stringify({version: 1, tiles: {height: "auto"}})]) {
        const t = core.tileSettings(core.reduce(core.initialState(), {type: "load", text}).preset.tiles);
        assert.equal(t.width === "auto", t.height === "auto", `${text}: one side given reads as parse_preset reads it`);
    }
});

test("load keeps the selection only when it still exists", () => {
    let s = core.initialState({width: 512, height: 512});
    s = core.reduce(s, {type: "add", box: box(0, 0, 64, 64)});
    s = core.reduce(s, {type: "add", box: box(64, 0, 64, 64)});
    assert.equal(s.selected, 1);
    s = core.reduce(s, {type: "load", text: JSON.stringify({version: 1, regions: [{x: 0, y: 0, width: 8, height: 8}]})});
    assert.equal(s.selected, 0);
    s = core.reduce(s, {type: "select", index: 7});
    assert.equal(s.selected, -1);
});

// ---------------------------------------------------------------- weights, memory, hires

test("weightField: normalised weights sum to 1 wherever a crop reaches", () => {
    const preset = {version: 1, tiles: {width: 256, height: 256, overlap: 64, batch_size: 4},
        regions: [{x: 40, y: 40, width: 200, height: 120, weight: 3}]};
    const plan = core.buildPlan(JSON.parse(core.serialise(preset)), 512, 384);
    const colours = plan.crops.map((c, i) => [i, 0, 0]);
    const field = core.weightField(plan, colours);
    assert.equal(field.uncovered, 0);
    for (const [cx, cy] of [[0, 0], [20, 10], [63, 47], [31, 23], [10, 40]]) {
        let sum = 0;
        plan.crops.forEach((c, i) => { sum += core.normalisedWeightAt(plan, i, cx, cy); });
        assert.ok(Math.abs(sum - 1) < 1e-12, `sum at ${cx},${cy} = ${sum}`);
        // the red channel is the crop index mixed by those weights
        let mixed = 0;
        plan.crops.forEach((c, i) => { mixed += i * core.normalisedWeightAt(plan, i, cx, cy); });
        assert.ok(Math.abs(field.rgb[3 * (cy * 64 + cx)] - mixed) < 1e-4);
    }
    const regionsOnly = core.buildPlan({version: 1, regions: [{x: 0, y: 0, width: 256, height: 384}]}, 512, 384);
    assert.equal(core.weightField(regionsOnly, [[1, 1, 1]]).uncovered, 32 * 48, "the right half is uncovered");
});

test("estimateCost: the cost model's time and memory, as lib_mixture.cost computes them", () => {
    const grid = (tile, batch) => core.buildPlan({version: 1, tiles: {width: tile, height: tile, overlap: 64, batch_size: batch},
        weights: {kind: "gaussian", variance: 0.01}, regions: []}, 2048, 2048);
    const m = core.COST_MODEL;
    assert.equal(m.name, "sd15-fp16-sdpa-h200");
    const one = core.estimateCost(grid(512, 1));
    assert.ok(Math.abs(one.activationBytes - (m.baseBytes + m.rowCellBytes * 2 * 64 * 64)) < 1e-3);
    assert.equal(one.bytes, m.weightsBytes + one.activationBytes);
    const n = grid(512, 1).crops.length;
    assert.ok(Math.abs(one.seconds - n * (m.call + m.rowCell * 2 * 4096 + m.rowCell2 * 2 * 4096 * 4096)) < 1e-9);
    const four = core.estimateCost(grid(512, 4));
    assert.ok(four.activationBytes > 3.5 * (one.activationBytes - m.baseBytes) && four.seconds < one.seconds,
        "4 crops a call: more memory, fewer calls");
    // a batch larger than the number of equal crops does not add memory
    const two = core.buildPlan({version: 1, tiles: {width: 1024, height: 2048, overlap: 0, batch_size: 16}}, 2048, 2048);
    assert.equal(core.estimateCost(two).rows, 2 * 2);
});

test("hiresSize follows the WebUI's hires-fix target", () => {
    assert.deepEqual(core.hiresSize(512, 512, 2, 0, 0), {width: 1024, height: 1024});
    assert.deepEqual(core.hiresSize(512, 768, 1.5, 0, 0), {width: 768, height: 1152});
    assert.deepEqual(core.hiresSize(512, 512, 1.33, 0, 0), {width: 680, height: 680}, "680.96 floored to the grid");
    assert.deepEqual(core.hiresSize(512, 768, 2, 1024, 0), {width: 1024, height: 1536});
    assert.deepEqual(core.hiresSize(512, 768, 2, 0, 1024), {width: 680, height: 1024});
    assert.deepEqual(core.hiresSize(512, 768, 2, 1024, 1024), {width: 1024, height: 1536});
    assert.deepEqual(core.hiresSize(768, 512, 2, 1024, 1024), {width: 1536, height: 1024});
});

// ---------------------------------------------------------------- upscale and tiled VAE

test("upscaleTarget: a scale rounds each side to the nearest 8 px, halves to even as Python does", () => {
    const size = (u, w, h) => { const t = core.upscaleTarget(u, w, h); return [t.width, t.height]; };
    assert.deepEqual(size({scale: 4}, 960, 540), [3840, 2160]);
    assert.deepEqual(size({scale: 1.5}, 960, 540), [1440, 808], "810 is 101.25 cells");
    assert.deepEqual(size({scale: 1}, 1012, 1020), [1008, 1024], "126.5 -> 126, 127.5 -> 128");
    assert.deepEqual(size({scale: 1}, 1004, 1028), [1008, 1024], "125.5 -> 126, 128.5 -> 128");
    assert.deepEqual(size({}, 960, 540), [1920, 1080], "scale 2 by default");
    assert.deepEqual(size({width: 3840, height: 2160, fit: "pad"}, 7, 9), [3840, 2160], "a size ignores the source");
    assert.equal(core.pyRound(2.5), 2);
    assert.equal(core.pyRound(3.5), 4);
    assert.equal(core.pyRound(-0.5), 0);
});

test("upscaleTarget: crop covers, pad fits inside, stretch fills; all centred", () => {
    const geo = (fit, w = 960, h = 540, tw = 1024, th = 1024) => core.upscaleTarget({width: tw, height: th, fit}, w, h).geometry;
    assert.deepEqual(geo("crop"), {width: 1024, height: 1024, resize_w: 1820, resize_h: 1024, x: -398, y: 0});
    assert.deepEqual(geo("pad"), {width: 1024, height: 1024, resize_w: 1024, resize_h: 576, x: 0, y: 224});
    assert.deepEqual(geo("stretch"), {width: 1024, height: 1024, resize_w: 1024, resize_h: 1024, x: 0, y: 0});
    assert.deepEqual(geo("crop", 1000, 700, 3840, 2160), {width: 3840, height: 2160, resize_w: 3840, resize_h: 2688, x: 0, y: -264});
    assert.deepEqual(geo("pad", 1000, 700, 3840, 2160), {width: 3840, height: 2160, resize_w: 3086, resize_h: 2160, x: 377, y: 0});
    assert.deepEqual(geo("crop", 960, 540, 3840, 2160), {width: 3840, height: 2160, resize_w: 3840, resize_h: 2160, x: 0, y: 0});
    assert.match(core.upscaleTarget({scale: 2, fit: "zoom"}, 960, 540).error, /upscale\.fit/);
});

test("upscaleTarget: a scale that leaves [64, 16384] px is refused with the scales that work", () => {
    assert.equal(core.upscaleTarget({scale: 16}, 2000, 1000).error, "upscale.scale: 16 takes this 2000x1000 image to 32000x16000; " +
        "each side must be in [64, 16384] px, which allows scales from 0.07 to 8.19 for this image");
    assert.match(core.upscaleTarget({scale: 2}, 1, 4000).error, /allows no scale \(the aspect ratio is too extreme\)/);
    assert.match(core.upscaleTarget({scale: 0.05}, 960, 540).error, /to 48x24;/);
    assert.match(core.upscaleTarget({scale: 2}, 0, 540).error, /the source image is empty \(0x540\)/);
    assert.equal(core.formatG(1e-5), "1e-05");
    assert.equal(core.formatG(123456789), "1.23457e+08");
    assert.equal(core.formatG(0.07), "0.07");
});

test("upscale actions: set, canonical sizing, off keeps it for later", () => {
    let s = core.initialState({width: 960, height: 544});
    assert.equal(s.upscaleChoice, "off");
    s = core.reduce(s, {type: "upscale", upscale: {scale: 2}, choice: "2x"});
    assert.deepEqual(s.preset.upscale, {upscaler: "Lanczos", scale: 2, fit: "crop", guide_strength: 0});
    assert.equal(s.upscaleChoice, "2x");
    s = core.reduce(s, {type: "upscale", upscale: {width: 2561, height: 1436}});
    assert.deepEqual(s.preset.upscale, {upscaler: "Lanczos", width: 2560, height: 1440, fit: "crop", guide_strength: 0},
        "a size replaces the scale, snapped to 8 px");
    assert.equal(s.upscaleChoice, "QHD 2560×1440");
    s = core.reduce(s, {type: "upscaleOptions", upscale: {width: 99999}});
    assert.deepEqual([s.preset.upscale.width, s.preset.upscale.height], [16384, 1440]);
    assert.equal(s.upscaleChoice, "size");
    s = core.reduce(s, {type: "upscaleOptions", upscale: {scale: 0}});
    assert.deepEqual(s.preset.upscale, {upscaler: "Lanczos", scale: 2, fit: "crop", guide_strength: 0},
        "a scale replaces the size; 0 is refused (the default)");
    assert.equal(s.upscaleChoice, "2x");
    s = core.reduce(s, {type: "upscaleOptions", upscale: {scale: "40", fit: "pad", guide_strength: 7, upscaler: "  ESRGAN_4x "}});
    assert.deepEqual(s.preset.upscale, {upscaler: "ESRGAN_4x", scale: 16, fit: "pad", guide_strength: 1});
    s = core.reduce(s, {type: "upscaleOptions", upscale: {fit: "zoom", upscaler: " ", guide_strength: "x"}});
    assert.deepEqual(s.preset.upscale, {upscaler: "ESRGAN_4x", scale: 16, fit: "pad", guide_strength: 1}, "bad values change nothing");
    s = core.reduce(s, {type: "upscale", upscale: null});
    assert.equal(s.preset.upscale, undefined);
    assert.equal(s.upscaleChoice, "off");
    assert.equal(JSON.parse(core.serialise(s.preset)).upscale, undefined, "off: no section in the JSON");
    s = core.reduce(s, {type: "upscaleOptions", upscale: {fit: "stretch"}});
    assert.equal(s.preset.upscale, undefined, "options while off wait in the stash");
    s = core.reduce(s, {type: "upscale", upscale: {width: 3840, height: 2160}, choice: "4K UHD 3840×2160"});
    assert.deepEqual(s.preset.upscale, {upscaler: "ESRGAN_4x", width: 3840, height: 2160, fit: "stretch", guide_strength: 1});
    s = core.reduce(s, {type: "upscaleOptions", upscale: {controlnet_tile: "  auto "}});
    assert.equal(s.preset.upscale.controlnet_tile, "auto", "trimmed, last in Upscale's order");
    assert.deepEqual(Object.keys(s.preset.upscale).slice(-1), ["controlnet_tile"]);
    s = core.reduce(s, {type: "upscale", upscale: {scale: 2}, choice: "2x"});
    assert.equal(s.preset.upscale.controlnet_tile, "auto", "a size change keeps it");
    s = core.reduce(s, {type: "upscaleOptions", upscale: {controlnet_tile: ""}});
    assert.equal("controlnet_tile" in s.preset.upscale, false, "none: left out, as Preset.to_dict does");
});

test("the Upscale target choice: the panel's memory while it still describes the JSON", () => {
    assert.equal(core.upscaleChoice(undefined, "scale"), "off");
    assert.equal(core.upscaleChoice({scale: 2}), "2x");
    assert.equal(core.upscaleChoice({scale: 2}, "scale"), "scale");
    assert.equal(core.upscaleChoice({}, "size"), "2x", "no sizing: scale 2");
    assert.equal(core.upscaleChoice({scale: 3}, "2x"), "scale");
    assert.equal(core.upscaleChoice({width: 3840, height: 2160}, "scale"), "4K UHD 3840×2160");
    assert.equal(core.upscaleChoice({width: 3840, height: 2160}, "size"), "size");
    assert.equal(core.upscaleChoice({width: 1000, height: 2160}, "4K UHD 3840×2160"), "size");
    let s = core.initialState();
    s = core.reduce(s, {type: "upscale", upscale: {scale: 2}, choice: "scale"});
    assert.equal(s.upscaleChoice, "scale");
    s = core.reduce(s, {type: "load", text: core.serialise(s.preset)});
    assert.equal(s.upscaleChoice, "scale", "a load that still fits keeps it");
    s = core.reduce(s, {type: "load", text: JSON.stringify({version: 1, tiles: {}, upscale: {width: 2560, height: 1440}})});
    assert.equal(s.upscaleChoice, "QHD 2560×1440");
});

test("canonical upscale and vae: Preset.to_dict's order, defaults filled, default VAE left out", () => {
    const c = (p) => core.canonical(Object.assign({version: 1, tiles: {}}, p));
    assert.deepEqual(Object.keys(c({upscale: {fit: "pad", width: 64, height: 64}, vae: {tile: 512}})),
        ["version", "name", "units", "tiles", "weights", "regions", "passes", "micro_conditioning", "upscale", "vae"]);
    assert.equal(c({}).micro_conditioning, "tiles", "the table's default");
    assert.equal(c({micro_conditioning: "off"}).micro_conditioning, "off");
    let s = core.reduce(core.initialState(), {type: "load", text: JSON.stringify({version: 1, tiles: {}, micro_conditioning: "all"})});
    s = core.reduce(s, {type: "passes", passes: "first"});
    assert.equal(JSON.parse(core.serialise(s.preset)).micro_conditioning, "all", "an edit keeps it");
    assert.deepEqual(c({upscale: {}}).upscale, {upscaler: "Lanczos", scale: 2, fit: "crop", guide_strength: 0});
    assert.deepEqual(c({upscale: {scale: null, width: 64, height: 128}}).upscale, {upscaler: "Lanczos", width: 64, height: 128, fit: "crop", guide_strength: 0});
    assert.deepEqual(c({upscale: {scale: 3, width: 64}}).upscale, {upscaler: "Lanczos", scale: 3, width: 64, fit: "crop", guide_strength: 0},
        "a broken section is kept for the validator");
    assert.equal(c({upscale: null}).upscale, undefined);
    assert.equal(c({vae: {tiling: "auto", tile: null}}).vae, undefined);
    assert.equal(c({vae: {}}).vae, undefined);
    assert.deepEqual(c({vae: {tile: 512}}).vae, {tiling: "auto", tile: 512});
    assert.match(core.parse(JSON.stringify({version: 1, upscale: 2})).error, /upscale must be an object/);
    assert.match(core.parse(JSON.stringify({version: 1, vae: "on"})).error, /vae must be an object/);
});

test("upscalerOf: the dropdown follows the JSON's upscaler when the WebUI has it", () => {
    const names = ["None", "Lanczos", "R-ESRGAN 4x+"];
    const text = (upscale) => JSON.stringify({version: 1, tiles: {}, upscale});
    assert.equal(core.upscalerOf(text({upscaler: "R-ESRGAN 4x+"}), "Lanczos", names), "R-ESRGAN 4x+");
    assert.equal(core.upscalerOf(text({upscaler: "4x-UltraSharp"}), "Lanczos", names), "Lanczos", "not installed here");
    assert.equal(core.upscalerOf(text(null), "Lanczos", names), "Lanczos");
    assert.equal(core.upscalerOf(text({scale: 2}), "None", names), "None");
    assert.equal(core.upscalerOf("{oops", "Lanczos", names), "Lanczos");
    assert.equal(core.upscalerOf("[1]", "Lanczos", names), "Lanczos");
});

test("vae action: tiling auto|on|off; tile 0 = from free memory, else 64..4096 on the 8 px grid", () => {
    let s = core.initialState();
    s = core.reduce(s, {type: "vae", tiling: "off"});
    assert.deepEqual(s.preset.vae, {tiling: "off", tile: null});
    s = core.reduce(s, {type: "vae", tile: 1001});
    assert.deepEqual(s.preset.vae, {tiling: "off", tile: 1000});
    s = core.reduce(s, {type: "vae", tiling: "sometimes", tile: 9000});
    assert.deepEqual(s.preset.vae, {tiling: "off", tile: 4096});
    s = core.reduce(s, {type: "vae", tile: 8});
    assert.equal(s.preset.vae.tile, 64);
    s = core.reduce(s, {type: "vae", tiling: "auto", tile: 0});
    assert.equal(s.preset.vae, undefined, "the default is left out of the JSON");
});
