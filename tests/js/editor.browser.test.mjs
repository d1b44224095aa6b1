// The region editor in a real browser (Debian's chromium, headless, through playwright-core) on
// tests/js/page.html, a stand-in for the WebUI page. Every action is checked in the hidden JSON.
// Screenshots go to $MOD_JS_OUT (default: <tmp>/mod-js-out).
//
//     node --test tests/js/editor.browser.test.mjs
import {after, before, describe, test} from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import {launch, outDir, watchErrors, CHROMIUM} from "./browser.mjs";
import {startServer, ROOT} from "./server.mjs";

const skip = fs.existsSync(CHROMIUM) ? false : `no chromium at ${CHROMIUM} (apt-get install -y chromium, or set MOD_CHROMIUM)`;

let server, browser, page, errors;

async function config(tab = "txt2img") {
    return JSON.parse(await page.inputValue(`#mod_${tab}_config textarea`));
}

/** Wait until the hidden JSON satisfies `check` (pushes of key nudges and typing are debounced). */
async function configWhen(check, tab = "txt2img", timeout = 3000) {
    const end = Date.now() + timeout;
    let last;
    for (;;) {
        last = await config(tab);
        if (check(last)) return last;
        if (Date.now() > end) assert.fail(`the JSON never got there; it is:\n${JSON.stringify(last, null, 1).slice(0, 1500)}`);
        await page.waitForTimeout(50);
    }
}

async function geometry(tab = "txt2img") {
    return page.evaluate((t) => {
        const ed = MoD.editor(t);
        ed.canvas.scrollIntoView({block: "nearest"}); // the mouse reaches only what is in the viewport
        const r = ed.canvas.getBoundingClientRect();
        return {left: r.left, top: r.top, width: r.width, height: r.height, k: ed.k, view: ed.state.view, selected: ed.state.selected};
    }, tab);
}

/** Screen point of canvas pixel (x, y). */
function at(g, x, y) {
    return [g.left + x * g.k, g.top + y * g.k];
}

async function drag(from, to, modifier) {
    if (modifier) await page.keyboard.down(modifier);
    await page.mouse.move(...from);
    await page.mouse.down();
    await page.mouse.move(...to, {steps: 8});
    await page.mouse.up();
    if (modifier) await page.keyboard.up(modifier);
}

function boxOf(r) {
    return [r.x, r.y, r.width, r.height];
}

function assertNear(got, want, tolerance, what) {
    got.forEach((v, i) => assert.ok(Math.abs(v - want[i]) <= tolerance, `${what}: ${JSON.stringify(got)} is not within ${tolerance} of ${JSON.stringify(want)}`));
    got.forEach((v) => assert.equal(v % 8, 0, `${what}: ${v} is not on the 8 px grid`));
}

async function setSlider(id, value) {
    await page.evaluate(([i, v]) => {
        const n = document.querySelector(`#${i} input[type=number]`);
        n.value = v;
        updateInput(n);
        n.dispatchEvent(new Event("change", {bubbles: true}));
    }, [id, value]);
}

/**
 * Drag a slider's range bar through `values` (input events, then change): what each step leaves
 * in the editor's state and on the sliders of both tile sides.
 */
async function dragSlider(id, values, tab = "txt2img") {
    return page.evaluate(([i, vs, t]) => {
        const r = document.querySelector(`#${i} input[type=range]`), ed = MoD.editor(t), steps = [];
        const number = (name) => document.querySelector(`#mod_${t}_${name} input[type=number]`).value;
        for (const v of vs) {
            r.value = v;
            r.dispatchEvent(new Event("input", {bubbles: true}));
            steps.push({tiles: MoDCore.tileSettings(ed.state.preset.tiles), w: number("tile_w"), h: number("tile_h")});
        }
        r.dispatchEvent(new Event("change", {bubbles: true}));
        return steps;
    }, [id, values, tab]);
}

/** The editor's "auto" line, parsed: the chosen side, the tiles' size on the canvas, tiles, batch, model, budget and source. */
const AUTO_LINE = /auto: (\d+)x(\d+) px tiles \((\d+) of them(?:, (\d+)x(\d+) on this canvas)?\), batch (\d+): \d+\.\d{3} s\/step and \d+\.\d\d GiB predicted by (\S+) for (\d+\.\d\d) GiB \(([^)]*)\): (?:the fastest of \d+ grids and batches that fit|the only grid and batch that fits)/;

async function autoLine(tab = "txt2img") {
    const text = await page.textContent(`#mod_${tab}_editor .mod-auto`);
    const m = AUTO_LINE.exec(text);
    assert.ok(m, `not an auto line: ${text}`);
    // width x height: the tiles on this canvas (the chosen side, or where the canvas clamps it, the clamped size)
    return {side: +m[1], width: +(m[4] || m[1]), height: +(m[5] || m[2]), tiles: +m[3], batch: +m[6], model: m[7], gib: m[8],
        source: m[9], text};
}

async function shot(name, selector = "#mod_txt2img_editor") {
    const file = path.join(outDir(), name);
    await page.locator(selector).screenshot({path: file});
    return file;
}

if (skip) test("region editor on the test page", {skip}, () => {});
else describe("region editor on the test page", {timeout: 5 * 60 * 1000}, () => {
    before(async () => {
        server = await startServer();
        browser = await launch();
        page = await browser.context.newPage();
        errors = watchErrors(page);
        await page.goto(`${server.url}/page.html`);
        await page.waitForSelector("body[data-ready='1'] #mod_txt2img_editor canvas.mod-canvas");
        await page.waitForFunction(() => MoD.editor("txt2img") && MoD.editor("txt2img").k > 0);
    });

    after(async () => {
        if (browser) await browser.close();
        if (server) await server.close();
    });

    test("it starts from the JSON and draws the canvas at the aspect ratio of width x height", async () => {
        const c = await config();
        assert.deepEqual(c.tiles, {width: "auto", height: "auto", overlap: 64, batch_size: "auto"}, "the panel's default");
        for (const id of ["tile_w", "tile_h", "batch"]) {
            assert.equal(await page.inputValue(`#mod_txt2img_${id} input[type=number]`), "0", `${id}: "auto" shows as 0`);
        }
        let g = await geometry();
        assert.deepEqual(g.view, {width: 512, height: 512});
        assert.ok(Math.abs(g.width - g.height) <= 1, `square canvas, got ${g.width}x${g.height}`);
        await setSlider("txt2img_width", 1024);
        await page.waitForFunction(() => MoD.editor("txt2img").state.view.width === 1024);
        g = await geometry();
        assert.ok(Math.abs(g.width / g.height - 2) < 0.02, `2:1 canvas, got ${g.width}x${g.height}`);
        const stats = await page.textContent("#mod_txt2img_editor .mod-stats");
        const auto = await autoLine();
        assert.equal(auto.model, "sd15-fp16-sdpa-h200", "no data-auto-model on this page: the default cost model");
        assert.equal(auto.gib, "8.00");
        assert.equal(auto.source, "the editor's default, 8 GiB");
        const want = await page.evaluate(() => MoDCore.resolveAuto(MoD.editor("txt2img").state.preset, [[1024, 512]], MoDCore.editorBudget()));
        assert.equal(auto.text, want.note, "the line is MoDCore.resolveAuto's note");
        assert.match(stats, new RegExp(`Canvas 1024×512 · tiles \\d+×1 = ${auto.tiles} of ${auto.width}×${auto.height} px`));
        assert.match(stats, new RegExp(`\\(${auto.tiles} crops, batch ${auto.batch}\\)`), "planned with the chosen batch");
        assert.match(stats, /model calls? per step/);
        assert.match(stats, /≈ \d+\.\d\d s\/step, peak ≈ \d+\.\d GiB \(estimate\)/);
        const formula = await page.textContent("#mod_txt2img_editor .mod-formula");
        assert.match(formula, /cost model sd15-fp16-sdpa-h200, fitted to model calls measured on that device: 2\.0 GiB of weights \+ 16\.0 KiB/);
        assert.match(await page.getAttribute("#mod_txt2img_editor .mod-formula", "title"), /NVIDIA H200, fp16/);
    });

    test("the controls write the JSON, snapped to 8 px, and show the snapped value", async () => {
        await setSlider("mod_txt2img_tile_w", 771);
        let c = await configWhen((j) => j.tiles.width === 768 && true);
        await setSlider("mod_txt2img_tile_w", 516);
        c = await configWhen((j) => j.tiles.width === 520);
        assert.equal(await page.inputValue("#mod_txt2img_tile_w input[type=number]"), "520");
        await setSlider("mod_txt2img_overlap", 1000);
        c = await configWhen((j) => j.tiles.overlap === 512);
        assert.equal(await page.inputValue("#mod_txt2img_overlap input[type=number]"), "512", "overlap stays below the tile (520 - 8)");
        await setSlider("mod_txt2img_overlap", 64);
        await setSlider("mod_txt2img_tile_w", 768);
        await page.check("#mod_txt2img_weighting input[value=constant]");
        c = await configWhen((j) => j.weights.kind === "constant");
        await page.check("#mod_txt2img_weighting input[value=gaussian]");
        await page.check("#mod_txt2img_passes input[value=hires]");
        c = await configWhen((j) => j.passes === "hires" && j.weights.kind === "gaussian");
        await page.check("#mod_txt2img_passes input[value=both]");
        await configWhen((j) => j.passes === "both");
    });

    test("tile sliders: 0 writes \"auto\" for both sides, one moved off 0 takes the other along, never a mixed pair", async () => {
        const start = await page.evaluate(() => window.modTestLog.length);
        await setSlider("mod_txt2img_tile_h", 0);
        await configWhen((j) => j.tiles.width === "auto" && j.tiles.height === "auto");
        assert.equal(await page.inputValue("#mod_txt2img_tile_w input[type=number]"), "0", "the other side's slider shows auto too");
        const steps = await dragSlider("mod_txt2img_tile_w", [128, 200, 512]);
        assert.deepEqual(steps.map((st) => [st.tiles.width, st.tiles.height, st.w, st.h]),
            [[128, 128, "128", "128"], [200, 200, "200", "200"], [512, 512, "512", "512"]], "the height follows while dragging");
        await configWhen((j) => j.tiles.width === 512 && j.tiles.height === 512);
        await dragSlider("mod_txt2img_tile_h", [384, 0]);
        await configWhen((j) => j.tiles.width === "auto" && j.tiles.height === "auto");
        assert.equal(await page.inputValue("#mod_txt2img_tile_w input[type=number]"), "0");
        await setSlider("mod_txt2img_batch", 3);
        await configWhen((j) => j.tiles.batch_size === 3);
        await setSlider("mod_txt2img_batch", 0);
        await configWhen((j) => j.tiles.batch_size === "auto");
        const pushed = await page.evaluate((n) => window.modTestLog.slice(n).map((e) => JSON.parse(e.text).tiles), start);
        assert.ok(pushed.length >= 4);
        const mixed = await page.evaluate((ts) => ts.map((t) => MoDCore.tileProblems(t)).filter((ps) => ps.length), pushed);
        assert.deepEqual(mixed, [], "every JSON the sliders wrote is one Python accepts");
        assert.ok(pushed.every((t) => (t.width === "auto") === (t.height === "auto")));
    });

    test("JSON \"auto\" shows 0 on the sliders; a mixed pair typed by hand gets Python's message", async () => {
        const ta = "#mod_txt2img_config textarea", good = await page.inputValue(ta), edited = JSON.parse(good);
        edited.tiles = {width: 640, height: 640, overlap: 64, batch_size: 5};
        await page.fill(ta, JSON.stringify(edited, null, 2));
        await page.waitForFunction(() => document.querySelector("#mod_txt2img_tile_w input[type=number]").value === "640");
        assert.equal(await page.inputValue("#mod_txt2img_batch input[type=number]"), "5");
        assert.equal(await page.isHidden("#mod_txt2img_editor .mod-auto"), true, "nothing auto: no auto line");
        edited.tiles = {width: "auto", height: "auto", overlap: 64, batch_size: "auto"};
        await page.fill(ta, JSON.stringify(edited, null, 2));
        await page.waitForFunction(() => ["tile_w", "tile_h", "batch"].every((id) =>
            document.querySelector(`#mod_txt2img_${id} input[type=number]`).value === "0"));
        edited.tiles = {width: 512, height: "auto", overlap: 64, batch_size: "auto"};
        await page.fill(ta, JSON.stringify(edited, null, 2));
        await page.waitForFunction(() => /beside "auto"/.test(document.querySelector("#mod_txt2img_editor .mod-stats").textContent));
        assert.match(await page.textContent("#mod_txt2img_editor .mod-stats"), /Canvas 1024×512: tiles\.width: 512 beside "auto": auto chooses both sides of a square tile; give both tiles\.width and tiles\.height as "auto" or both in px/);
        await page.fill(ta, good);
        await configWhen((j) => j.tiles.width === "auto" && j.tiles.height === "auto");
        await autoLine();
    });

    test("drag on empty space creates a region, snapped to the latent grid", async () => {
        await page.check("#mod_txt2img_mode input[value=both]");
        let g = await geometry();
        await drag(at(g, 100, 100), at(g, 300, 220));
        const c = await configWhen((j) => j.regions.length === 1);
        assertNear(boxOf(c.regions[0]), [100, 100, 200, 120], 8, "new region");
        assert.deepEqual(c.canvas, {width: 1024, height: 512});
        assert.ok(c.tiles, "mode both keeps the grid");
        g = await geometry();
        assert.equal(g.selected, 0, "the new region is selected");
        const readout = await page.textContent("#mod_txt2img_editor .mod-readout");
        const r = c.regions[0];
        assert.ok(readout.includes(`Region 1: x ${r.x}, y ${r.y}, ${r.width}×${r.height} px`), readout);
        assert.equal(await page.getAttribute("#mod_txt2img_editor .mod-editor", "data-regions"), "1");
    });

    test("drag inside moves it; a handle resizes it", async () => {
        let r = (await config()).regions[0];
        let g = await geometry();
        await drag(at(g, r.x + 40, r.y + 40), at(g, r.x + 40 + 64, r.y + 40 + 32));
        let c = await configWhen((j) => j.regions[0].x !== r.x);
        assertNear(boxOf(c.regions[0]), [r.x + 64, r.y + 32, r.width, r.height], 8, "moved region");
        assert.equal(c.regions[0].width, r.width);
        assert.equal(c.regions[0].height, r.height);
        r = c.regions[0];
        g = await geometry();
        await drag(at(g, r.x + r.width, r.y + r.height), at(g, r.x + r.width + 80, r.y + r.height + 40));
        c = await configWhen((j) => j.regions[0].width !== r.width);
        assertNear(boxOf(c.regions[0]), [r.x, r.y, r.width + 80, r.height + 40], 8, "resized region");
        assert.equal(c.regions[0].x, r.x);
        assert.equal(c.regions[0].y, r.y);
    });

    test("arrow keys nudge by 8 px, with Shift by 64 px", async () => {
        const r = (await config()).regions[0];
        await page.focus("#mod_txt2img_editor canvas");
        await page.keyboard.press("ArrowRight");
        await page.keyboard.press("ArrowRight");
        await page.keyboard.press("Shift+ArrowDown");
        await page.keyboard.press("ArrowLeft");
        const c = await configWhen((j) => j.regions[0].y === r.y + 64 && j.regions[0].x === r.x + 8);
        assert.deepEqual(boxOf(c.regions[0]), [r.x + 8, r.y + 64, r.width, r.height]);
    });

    test("a region written without its optional fields shows their defaults, not blanks", async () => {
        const ed = "#mod_txt2img_editor";
        const before = await page.inputValue("#mod_txt2img_config textarea");
        const edited = JSON.parse(before);
        const r = edited.regions[0];
        edited.regions[0] = {x: r.x, y: r.y, width: r.width, height: r.height};
        await page.fill("#mod_txt2img_config textarea", JSON.stringify(edited));
        await page.waitForFunction(() => MoD.editor("txt2img").state.preset.regions[0].prompt_mode === undefined);
        await page.click(`${ed} li[data-index="0"]`);
        assert.equal(await page.inputValue(`${ed} select[data-field=prompt_mode]`), "replace");
        assert.equal(await page.inputValue(`${ed} input[data-field=weight]`), "1");
        assert.equal(await page.inputValue(`${ed} input[data-field=seed]`), "-1");
        await page.fill("#mod_txt2img_config textarea", before);
        await configWhen((j) => JSON.stringify(j) === JSON.stringify(JSON.parse(before)));
        await page.click(`${ed} li[data-index="0"]`);
    });

    test("inline fields edit the selected region's prompt, negative prompt, CFG, weight and seed", async () => {
        const ed = "#mod_txt2img_editor";
        await page.fill(`${ed} textarea[data-field=prompt]`, "a stone castle on a hill");
        await page.fill(`${ed} textarea[data-field=negative_prompt]`, "fog");
        await page.fill(`${ed} input[data-field=cfg_scale]`, "9.5");
        await page.press(`${ed} input[data-field=cfg_scale]`, "Tab");
        await page.fill(`${ed} input[data-field=weight]`, "3");
        await page.press(`${ed} input[data-field=weight]`, "Tab");
        await page.fill(`${ed} input[data-field=seed]`, "1234");
        await page.press(`${ed} input[data-field=seed]`, "Tab");
        await page.selectOption(`${ed} select[data-field=prompt_mode]`, "append");
        const c = await configWhen((j) => j.regions[0].seed === 1234 && j.regions[0].prompt_mode === "append");
        const r = c.regions[0];
        assert.equal(r.prompt, "a stone castle on a hill");
        assert.equal(r.negative_prompt, "fog");
        assert.equal(r.cfg_scale, 9.5);
        assert.equal(r.weight, 3);
        await page.fill(`${ed} input[data-field=cfg_scale]`, "");
        await page.press(`${ed} input[data-field=cfg_scale]`, "Tab");
        await configWhen((j) => j.regions[0].cfg_scale === null);
        assert.match(await page.textContent(`${ed} .mod-list`), /1 a stone castle on a hill/);
    });

    test("a second region; bring forward and send backward change the z-order", async () => {
        const g = await geometry();
        await drag(at(g, 600, 60), at(g, 900, 400));
        let c = await configWhen((j) => j.regions.length === 2);
        assertNear(boxOf(c.regions[1]), [600, 60, 300, 340], 8, "second region");
        await page.fill("#mod_txt2img_editor textarea[data-field=prompt]", "a dragon");
        await configWhen((j) => j.regions[1].prompt === "a dragon");
        await page.click("#mod_txt2img_editor [data-act=backward]");
        c = await configWhen((j) => j.regions[0].prompt === "a dragon");
        assert.equal(c.regions[1].prompt, "a stone castle on a hill");
        await page.click("#mod_txt2img_editor [data-act=forward]");
        await configWhen((j) => j.regions[1].prompt === "a dragon");
        await shot("editor-two-regions.png");
    });

    test("Delete removes the selected region", async () => {
        await page.focus("#mod_txt2img_editor canvas");
        await page.keyboard.press("Delete");
        const c = await configWhen((j) => j.regions.length === 1);
        assert.equal(c.regions[0].prompt, "a stone castle on a hill");
        assert.equal(await page.getAttribute("#mod_txt2img_editor .mod-editor", "data-regions"), "1");
    });

    test("mode: tiles hides the regions, both brings them back, regions drops the grid", async () => {
        await page.check("#mod_txt2img_mode input[value=tiles]");
        let c = await configWhen((j) => j.regions.length === 0);
        assert.ok(c.tiles);
        await page.check("#mod_txt2img_mode input[value=both]");
        c = await configWhen((j) => j.regions.length === 1);
        await page.check("#mod_txt2img_mode input[value=regions]");
        c = await configWhen((j) => !j.tiles);
        assert.equal(c.regions.length, 1);
        assert.match(await page.textContent("#mod_txt2img_editor .mod-message"), /uncovered/);
        await page.check("#mod_txt2img_mode input[value=both]");
        await configWhen((j) => !!j.tiles && j.regions.length === 1);
    });

    test("loading a preset drives the editor and the controls; its canvas can be taken over", async () => {
        await page.selectOption("#mod_txt2img_preset", "paper-fig4-composition");
        await page.click("#mod_txt2img_load");
        const want = JSON.parse(fs.readFileSync(path.join(ROOT, "presets", "paper-fig4-composition.json"), "utf8"));
        const c = await configWhen((j) => j.name === "paper-fig4-composition");
        assert.deepEqual(c, want, "the editor leaves a loaded preset as it is");
        await page.waitForFunction(() => document.querySelector("#mod_txt2img_editor .mod-editor").dataset.regions === "3");
        assert.ok(await page.isChecked("#mod_txt2img_mode input[value=regions]"), "mode follows the JSON");
        const message = await page.textContent("#mod_txt2img_editor .mod-message");
        assert.match(message, /drawn on 1408×640 and are scaled to 1024×512/);
        await page.click("#mod_txt2img_editor [data-act=use-preset-canvas]");
        await page.waitForFunction(() => MoD.editor("txt2img").state.view.width === 1408);
        assert.equal(await page.inputValue("#txt2img_width input[type=number]"), "1408");
        assert.equal(await page.inputValue("#txt2img_height input[type=number]"), "640");
        const g = await geometry();
        assert.ok(Math.abs(g.width / g.height - 2.2) < 0.02);
        assert.deepEqual(await config(), want, "still untouched");
        await shot("editor-fig4.png");
    });

    test("a tiles preset sets the sliders from the JSON", async () => {
        await page.selectOption("#mod_txt2img_preset", "paper-fig8-4k-grid");
        await page.click("#mod_txt2img_load");
        await configWhen((j) => j.name === "paper-fig8-4k-grid");
        await page.waitForFunction(() => document.querySelector("#mod_txt2img_tile_w input[type=number]").value === "640");
        assert.equal(await page.inputValue("#mod_txt2img_tile_h input[type=number]"), "480");
        assert.equal(await page.inputValue("#mod_txt2img_overlap input[type=number]"), "320");
        assert.equal(await page.inputValue("#mod_txt2img_batch input[type=number]"), "0", "batch_size \"auto\"");
        assert.ok(await page.isChecked("#mod_txt2img_mode input[value=tiles]"));
    });

    test("4K UHD: hires fix 2x from 1920x1080 and the upscale grid, in one click", async () => {
        await page.click("#mod_txt2img_up4k");
        const c = await configWhen((j) => j.tiles.overlap === 128);
        assert.deepEqual(c.tiles, {width: 768, height: 768, overlap: 128, batch_size: "auto"});
        assert.equal(c.passes, "both");
        assert.equal(await page.inputValue("#txt2img_width input[type=number]"), "1920");
        assert.equal(await page.inputValue("#txt2img_height input[type=number]"), "1080");
        assert.ok(await page.isChecked("#txt2img_hr-checkbox input"), "hires fix on");
        assert.equal(await page.inputValue("#txt2img_hr_scale input[type=number]"), "2");
        const stats = await page.textContent("#mod_txt2img_editor .mod-stats");
        assert.match(stats, /First pass 1920×1080 · tiles 3×2 = 6 of 768×768 px/);
        assert.match(stats, /Hires pass 3840×2160 · tiles 6×4 = 24 of 768×768 px/);
        assert.equal(await page.inputValue("#mod_txt2img_overlap input[type=number]"), "128");
        let auto = await autoLine();
        assert.deepEqual([auto.width, auto.height, auto.tiles], [768, 768, 24], "the batch is chosen on the hires pass, the larger");
        assert.match(stats, new RegExp(`First pass 1920×1080 · .*\\(6 crops, batch ${auto.batch}\\)`), "the same batch for both passes");
        assert.match(stats, new RegExp(`Hires pass 3840×2160 · .*\\(24 crops, batch ${auto.batch}\\)`));
        await shot("editor-4k.png");
        // auto sides too: one square tile chosen on the hires pass holds for both passes
        await setSlider("mod_txt2img_tile_w", 0);
        await configWhen((j) => j.tiles.width === "auto" && j.tiles.height === "auto" && j.tiles.overlap === 128);
        auto = await autoLine();
        const want = await page.evaluate(() => MoDCore.resolveAuto(MoD.editor("txt2img").state.preset, [[1920, 1080], [3840, 2160]],
            MoDCore.editorBudget()));
        assert.equal(auto.text, want.note);
        assert.equal(want.choice.tiles, auto.tiles);
        const both = await page.textContent("#mod_txt2img_editor .mod-stats");
        assert.match(both, new RegExp(`First pass 1920×1080 · tiles \\d+×\\d+ = \\d+ of ${auto.width}×${auto.height} px`));
        assert.match(both, new RegExp(`Hires pass 3840×2160 · tiles \\d+×\\d+ = ${auto.tiles} of ${auto.width}×${auto.height} px.*batch ${auto.batch}\\)`));
        await page.click("#mod_txt2img_up4k");
        await configWhen((j) => j.tiles.width === 768);
    });

    test("broken JSON typed by hand: the editor waits, then follows the fix", async () => {
        const ta = "#mod_txt2img_config textarea";
        const good = await page.inputValue(ta);
        await page.fill(ta, good.slice(0, 40));
        await page.waitForFunction(() => !document.querySelector("#mod_txt2img_editor .mod-message").hidden);
        assert.match(await page.textContent("#mod_txt2img_editor .mod-message"), /has a problem/);
        const g = await geometry();
        await drag(at(g, 50, 50), at(g, 300, 300));
        assert.equal(await page.inputValue(ta), good.slice(0, 40), "no edits while the JSON is broken");
        const fixed = JSON.parse(good);
        fixed.canvas = {width: 1920, height: 1080};
        fixed.regions = [{x: 0, y: 0, width: 960, height: 1080, prompt: "left"}, {x: 960, y: 0, width: 960, height: 1080, prompt: "right"}];
        await page.fill(ta, JSON.stringify(fixed, null, 2));
        await page.waitForFunction(() => document.querySelector("#mod_txt2img_editor .mod-editor").dataset.regions === "2");
        assert.ok(await page.isChecked("#mod_txt2img_mode input[value=both]"));
    });

    test("no fixed limit on the number of regions; Ctrl+drag draws over others", async () => {
        await page.check("#mod_txt2img_mode input[value=regions]");
        const g = await geometry();
        for (let i = 0; i < 10; i++) { // the two regions cover the canvas: no empty space left
            const x = 40 + (i % 5) * 360, y = 60 + Math.floor(i / 5) * 480;
            await drag(at(g, x, y), at(g, x + 300, y + 400), "Control");
        }
        const c = await configWhen((j) => j.regions.length === 12);
        assert.equal(c.regions.length, 12);
        await page.click("#mod_txt2img_editor [data-act=duplicate]");
        await configWhen((j) => j.regions.length === 13);
        await shot("editor-many.png");
    });

    test("img2img: 4K writes the upscale section; the canvas is its target over the source image", async () => {
        await page.waitForFunction(() => MoD.editor("img2img") && MoD.editor("img2img").k > 0);
        let g = await geometry("img2img");
        assert.deepEqual(g.view, {width: 768, height: 512});
        assert.equal(await page.isHidden("#mod_img2img_editor .mod-upscale-note"), true, "no upscale section, no note");
        await drag(at(g, 400, 100), at(g, 700, 400));
        const drawn = (await configWhen((j) => j.regions.length === 1, "img2img")).regions[0];
        await page.click("#mod_img2img_up4k");
        let c = await configWhen((j) => !!j.upscale, "img2img");
        assert.deepEqual(c.upscale, {upscaler: "Lanczos", width: 3840, height: 2160, fit: "crop", guide_strength: 0});
        assert.deepEqual(c.tiles, {width: 768, height: 768, overlap: 128, batch_size: "auto"});
        assert.equal(c.regions.length, 1, "the region stays");
        await page.waitForFunction(() => MoD.editor("img2img").state.view.width === 3840);
        g = await geometry("img2img");
        assert.deepEqual(g.view, {width: 3840, height: 2160}, "the canvas is the upscale target");
        assert.equal(await page.inputValue("#img2img_scale input[type=number]"), "1", "the WebUI's Resize by is left alone");
        assert.equal(await page.getAttribute("#img2img_tab_resize_by", "style"), "display: none;");
        assert.ok(await page.isChecked("#mod_img2img_upscale_target input[value='4K UHD 3840×2160']"), "the Target radio follows");
        assert.equal(await page.inputValue("#mod_img2img_upscale_width input"), "3840");
        assert.equal(await page.inputValue("#mod_img2img_upscale_height input"), "2160");
        assert.equal(await page.textContent("#mod_img2img_editor .mod-upscale-note"),
            "Upscale with Lanczos: source 960×540 → target 3840×2160 (crop)");
        const stats = await page.textContent("#mod_img2img_editor .mod-stats");
        assert.match(stats, /Canvas 3840×2160 · tiles 6×4 = 24 of 768×768 px/);
        const auto = await autoLine("img2img"); // this editor has the panel's data-auto-* attributes
        assert.deepEqual([auto.model, auto.gib, auto.source], ["sd15-fp32-sdpa-cpu-2core", "12.00", "the weights and 90% of the 9.03 GiB free on cpu at start-up"]);
        assert.match(stats, new RegExp(`\\(25 crops, batch ${auto.batch}\\)`), "24 tiles and the region, the batch chosen");
        assert.match(await page.textContent("#mod_img2img_editor .mod-formula"), /cost model sd15-fp32-sdpa-cpu-2core, fitted/,
            "the estimates use the host's model");
        const shown = await page.$$eval("#mod_img2img_editor [data-box]", (els) => els.map((e) => +e.value));
        const kx = 3840 / 768, ky = 2160 / 512;
        const want = await page.evaluate(([d, x, y]) => MoDCore.snapBox(d.x * x, d.y * y, d.width * x, d.height * y, 3840, 2160), [drawn, kx, ky]);
        assert.deepEqual(shown, boxOf(want), "the box fields follow the canvas size");
        assert.equal(await page.$("#mod_img2img_editor [data-act=use-preset-canvas]"), null, "the upscale sets the canvas, not the sliders");
        await shot("editor-img2img-4k.png", "#mod_img2img_editor");
        await page.click("#mod_img2img_up2x");
        c = await configWhen((j) => j.upscale.scale === 2, "img2img");
        assert.deepEqual(c.upscale, {upscaler: "Lanczos", scale: 2, fit: "crop", guide_strength: 0}, "2x: a scale, no size");
        await page.waitForFunction(() => MoD.editor("img2img").state.view.width === 1920);
        assert.deepEqual((await geometry("img2img")).view, {width: 1920, height: 1080});
        assert.ok(await page.isChecked("#mod_img2img_upscale_target input[value='2x']"));
    });

    test("img2img: 4K + ControlNet tile is the 4K recipe with upscale.controlnet_tile auto; the other buttons clear it", async () => {
        await page.click("#mod_img2img_up4kcn");
        let c = await configWhen((j) => j.upscale && j.upscale.controlnet_tile === "auto", "img2img");
        assert.deepEqual(c.upscale, {upscaler: "Lanczos", width: 3840, height: 2160, fit: "crop", guide_strength: 0,
            controlnet_tile: "auto"});
        assert.deepEqual(c.tiles, {width: 768, height: 768, overlap: 128, batch_size: "auto"});
        assert.ok(await page.isChecked("#mod_img2img_upscale_target input[value='4K UHD 3840×2160']"));
        assert.match(await page.textContent("#mod_img2img_editor"), /ControlNet tile\./);
        assert.match(await page.textContent("#mod_img2img_editor .mod-upscale-note"), / · ControlNet tile: auto \(a ControlNet unit/);
        await page.click("#mod_img2img_upscale_fit input[value=pad]");
        c = await configWhen((j) => j.upscale.fit === "pad", "img2img");
        assert.equal(c.upscale.controlnet_tile, "auto", "the section's other controls keep it");
        await page.click("#mod_img2img_up4k");
        c = await configWhen((j) => j.upscale.fit === "crop" && !("controlnet_tile" in j.upscale), "img2img");
        assert.deepEqual(c.upscale, {upscaler: "Lanczos", width: 3840, height: 2160, fit: "crop", guide_strength: 0});
    });

    test("img2img: the upscale and VAE controls follow a JSON edit and write the JSON", async () => {
        const edited = await config("img2img");
        edited.upscale = {upscaler: "R-ESRGAN 4x+", scale: 1.5, fit: "pad", guide_strength: 0.3};
        edited.vae = {tiling: "on", tile: 1024};
        await page.fill("#mod_img2img_config textarea", JSON.stringify(edited, null, 2));
        await page.waitForFunction(() => MoD.editor("img2img").state.view.width === 1440);
        assert.deepEqual((await geometry("img2img")).view, {width: 1440, height: 808}, "960x540 x 1.5, sides on the 8 px grid");
        assert.ok(await page.isChecked("#mod_img2img_upscale_target input[value=scale]"));
        assert.equal(await page.inputValue("#mod_img2img_upscale_scale input"), "1.5");
        assert.ok(await page.isChecked("#mod_img2img_upscale_fit input[value=pad]"));
        assert.equal(await page.inputValue("#mod_img2img_upscale_guide input[type=number]"), "0.3");
        assert.ok(await page.isChecked("#mod_img2img_vae_tiling input[value=on]"));
        assert.equal(await page.inputValue("#mod_img2img_vae_tile input[type=number]"), "1024");
        assert.equal(await page.inputValue("#mod_img2img_upscaler select"), "R-ESRGAN 4x+");
        assert.match(await page.textContent("#mod_img2img_editor .mod-upscale-note"), /source 960×540 → target 1440×808 \(pad\)$/);
        assert.deepEqual(await config("img2img"), edited, "following the JSON does not rewrite it");

        await page.selectOption("#mod_img2img_upscaler select", "Nearest");
        await configWhen((j) => j.upscale.upscaler === "Nearest", "img2img");
        await page.check("#mod_img2img_upscale_target input[value=size]");
        let c = await configWhen((j) => j.upscale.width === 3840, "img2img");
        assert.deepEqual(c.upscale, {upscaler: "Nearest", width: 3840, height: 2160, fit: "pad", guide_strength: 0.3},
            "size: the Width and Height fields, no scale");
        await setSlider("mod_img2img_upscale_width", 2001);
        c = await configWhen((j) => j.upscale.width === 2000, "img2img");
        assert.equal(await page.inputValue("#mod_img2img_upscale_width input"), "2000", "snapped to 8 px");
        assert.ok(await page.isChecked("#mod_img2img_upscale_target input[value=size]"));
        await page.check("#mod_img2img_upscale_fit input[value=stretch]");
        await setSlider("mod_img2img_upscale_guide", 0.5);
        await page.check("#mod_img2img_vae_tiling input[value=auto]");
        await setSlider("mod_img2img_vae_tile", 0);
        c = await configWhen((j) => j.upscale.fit === "stretch" && j.upscale.guide_strength === 0.5 && j.vae === undefined, "img2img");
        await page.waitForFunction(() => MoD.editor("img2img").state.view.width === 2000);
        await page.check("#mod_img2img_upscale_target input[value=off]");
        c = await configWhen((j) => j.upscale === undefined, "img2img");
        await page.waitForFunction(() => MoD.editor("img2img").state.view.width === 768);
        assert.equal(await page.isHidden("#mod_img2img_editor .mod-upscale-note"), true);
        await page.check("#mod_img2img_upscale_target input[value=scale]");
        c = await configWhen((j) => !!j.upscale, "img2img");
        assert.deepEqual(c.upscale, {upscaler: "Nearest", scale: 1.5, fit: "stretch", guide_strength: 0.5},
            "off kept the section's options; scale comes from the Scale field");
        await setSlider("mod_img2img_upscale_scale", 0.05);
        c = await configWhen((j) => j.upscale.scale === 0.05, "img2img");
        assert.match(await page.textContent("#mod_img2img_editor .mod-upscale-note"),
            /upscale\.scale: 0\.05 takes this 960x540 image to 48x24; .* allows scales from 0\.12 to 17\.06/);
        assert.deepEqual((await geometry("img2img")).view, {width: 768, height: 512}, "an unreachable target leaves the WebUI's size");
        assert.equal(await page.isChecked("#mod_img2img_upscale_target input[value=scale]"), true);
    });

    test("txt2img: the Tiled VAE controls write the vae section, left out at its default", async () => {
        await page.check("#mod_txt2img_vae_tiling input[value=off]");
        let c = await configWhen((j) => j.vae && j.vae.tiling === "off");
        assert.deepEqual(c.vae, {tiling: "off", tile: null});
        await setSlider("mod_txt2img_vae_tile", 517);
        c = await configWhen((j) => j.vae.tile === 520);
        assert.equal(await page.inputValue("#mod_txt2img_vae_tile input[type=number]"), "520");
        await page.check("#mod_txt2img_vae_tiling input[value=auto]");
        await setSlider("mod_txt2img_vae_tile", 0);
        c = await configWhen((j) => j.vae === undefined);
        assert.equal(c.upscale, undefined, "txt2img has no upscale");
    });

    test("dark theme: colours come from the theme's variables", async () => {
        await page.evaluate(() => { document.body.classList.add("dark"); MoD.editor("txt2img").render(); });
        const colour = await page.evaluate(() => getComputedStyle(document.querySelector("#mod_txt2img_editor .mod-stats")).color);
        assert.equal(colour, "rgb(156, 163, 175)");
        await shot("editor-dark.png", "#tab_txt2img");
        await page.evaluate(() => { document.body.classList.remove("dark"); MoD.editor("txt2img").render(); });
    });

    test("export downloads the JSON", async () => {
        const [download] = await Promise.all([page.waitForEvent("download"), page.click("#mod_txt2img_export")]);
        const file = path.join(outDir(), "exported.json");
        await download.saveAs(file);
        assert.deepEqual(JSON.parse(fs.readFileSync(file, "utf8")), await config());
    });

    test("tooltips and limits come from the preset's field table", async () => {
        const got = await page.evaluate(() => {
            const cfg = document.querySelector("#mod_txt2img_editor [data-field=cfg_scale]");
            return {tile: document.querySelector("#mod_txt2img_tile_w").title, batch: document.querySelector("#mod_txt2img_batch").title,
                cfgTitle: cfg.closest("label").title, cfgMax: cfg.max,
                seedMax: document.querySelector("#mod_txt2img_editor [data-field=seed]").max, fields: MoDFields.fields};
        });
        const f = got.fields;
        assert.ok(got.tile.startsWith(f["tiles.width"].doc), got.tile);
        assert.ok(got.tile.includes(`${f["tiles.width"].min} to ${f["tiles.width"].max} px, or auto`), got.tile);
        assert.match(got.tile, /Here 0 is auto: both sides are chosen/);
        assert.match(got.batch, /Here 0 is auto: the batch is chosen/);
        assert.ok(got.cfgTitle.startsWith(f["regions[].cfg_scale"].doc), got.cfgTitle);
        assert.equal(+got.cfgMax, f["regions[].cfg_scale"].max);
        assert.equal(+got.seedMax, f["regions[].seed"].max);
    });

    test("a host without a cost model: the fixed default (768 px, batch 4), as its jobs, and the default model's estimates", async () => {
        const source = "no cost model is measured for sdxl on mps in fp16; there are: sd15-fp16-sdpa-h200 at start-up";
        const got = await page.evaluate((src) => {
            const ed = MoD.editor("img2img"), host = ed.host, before = ["data-auto-model", "data-auto-budget", "data-auto-source"]
                .map((a) => [a, host.getAttribute(a)]);
            host.setAttribute("data-auto-model", "");
            host.setAttribute("data-auto-budget", "0");
            host.setAttribute("data-auto-source", src);
            ed.commit({type: "tiles", tiles: {width: 0}});
            const out = {note: host.querySelector(".mod-auto").textContent, formula: host.querySelector(".mod-formula").textContent,
                stats: host.querySelector(".mod-stats").textContent, tiles: JSON.parse(ed.textarea().value).tiles};
            before.forEach(([a, v]) => host.setAttribute(a, v));
            ed.commit({type: "tiles", tiles: {width: 768}});
            return out;
        }, source);
        assert.deepEqual([got.tiles.width, got.tiles.height], ["auto", "auto"]);
        assert.equal(got.note, `auto: 768x768 px tiles, batch 4 (the fixed default: ${source})`);
        assert.match(got.stats, /Canvas 768×512 · tiles 1×1 = 1 of 768×512 px .*batch 4\)/, "768 px clamped to the canvas");
        assert.match(got.formula, /cost model sd15-fp16-sdpa-h200, fitted/);
    });

    test("no console errors", async () => {
        await page.setViewportSize({width: 1500, height: 1100});
        await page.screenshot({path: path.join(outDir(), "page.png"), fullPage: true});
        assert.deepEqual(errors, []);
    });
});
