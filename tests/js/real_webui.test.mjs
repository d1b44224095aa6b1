// The panel in a real WebUI v1.10.1 (CPU, a tiny random checkpoint), driven through Debian's
// chromium: open the accordion, draw three regions, give each a prompt, generate, and find the
// regions in the infotext; paste that infotext back; save, overwrite and delete a user preset.
//
// Skipped unless MOD_WEBUI_DIR names a WebUI checkout with its venv (tests/webui/launcher.py).
// MOD_WEBUI_URL uses a WebUI that is already running (with this extension) instead.
//
//     MOD_WEBUI_DIR=/path/to/webui node --test tests/js/real_webui.test.mjs
import {after, before, describe, test} from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import {launch, outDir, watchErrors, CHROMIUM} from "./browser.mjs";
import {ROOT} from "./server.mjs";
import {startWebUI} from "./webui.mjs";

// The WebUI's own errors, not the extension's: its CDN script (offline here), and gradio's
// "reading 'props'" from Blocks-*.js that toggling Hires. fix raises in a plain WebUI v1.10.1
// too (checked with --disable-extra-extensions).
const HOST_ERRORS = /ERR_NAME_NOT_RESOLVED|ERR_INTERNET_DISCONNECTED|iframeResizer|reading 'props'\)\n\s*at \S*\/assets\/Blocks-/;
const skip = !process.env.MOD_WEBUI_DIR && !process.env.MOD_WEBUI_URL ? "MOD_WEBUI_DIR is not set (no WebUI to test against)"
    : !fs.existsSync(CHROMIUM) ? `no chromium at ${CHROMIUM}` : false;

const W = 192, H = 128;
const REGIONS = [
    {box: [0, 0, 80, 128], prompt: "a red barn"},
    {box: [56, 0, 80, 128], prompt: "a dirt road"},
    {box: [112, 0, 80, 128], prompt: "a giant robot"},
];

let webui = null, info = null, browser, page, errors;

async function config() {
    return JSON.parse(await page.inputValue("#mod_txt2img_config textarea"));
}

async function configWhen(check, timeout = 10000) {
    const end = Date.now() + timeout;
    for (;;) {
        const c = await config();
        if (check(c)) return c;
        if (Date.now() > end) assert.fail(`the JSON never got there:\n${JSON.stringify(c).slice(0, 1500)}`);
        await page.waitForTimeout(100);
    }
}

async function setNumber(id, value) {
    await page.evaluate(([i, v]) => {
        const n = gradioApp().querySelector(`#${i} input[type=number]`);
        n.value = v;
        updateInput(n);
    }, [id, value]);
}

async function geometry() {
    await page.locator("#mod_txt2img_editor canvas").scrollIntoViewIfNeeded();
    return page.evaluate(() => {
        const ed = MoD.editor("txt2img"), r = ed.canvas.getBoundingClientRect();
        return {left: r.left, top: r.top, k: ed.k, view: ed.state.view};
    });
}

async function openPanel() {
    await page.fill("#txt2img_prompt textarea", "a landscape");
    await setNumber("txt2img_width", W);
    await setNumber("txt2img_height", H);
    await setNumber("txt2img_steps", 3);
    await page.click("#mod_txt2img_enabled .label-wrap");
    await page.waitForFunction(() => gradioApp().querySelector("#mod_txt2img_enabled-visible-checkbox").checked);
}

/** Choose a preset in the dropdown (bundled/... or user/...) and press Load. */
async function loadPreset(choice) {
    await page.click("#mod_txt2img_preset input");
    await page.keyboard.type(choice);
    await page.keyboard.press("Enter");
    await page.click("#mod_txt2img_load");
}

function infotextConfig(text) {
    const m = /Mixture of Diffusers: ("(?:\\.|[^"\\])*"|\{.*?\})(?:,|$)/m.exec(text);
    assert.ok(m, `no Mixture of Diffusers in the infotext:\n${text}`);
    const value = m[1].startsWith("\"") ? JSON.parse(m[1]) : m[1];
    return JSON.parse(value);
}

if (skip) test("the panel in a real WebUI", {skip}, () => {});
else describe("the panel in a real WebUI", {timeout: 20 * 60 * 1000}, () => {
    before(async () => {
        if (process.env.MOD_WEBUI_URL) {
            info = {url: process.env.MOD_WEBUI_URL};
        } else {
            const started = await startWebUI();
            webui = started.child;
            info = started.info;
        }
        browser = await launch({width: 1600, height: 1200});
        page = await browser.context.newPage();
        page.setDefaultTimeout(60000);
        errors = watchErrors(page);
        await page.goto(info.url, {timeout: 180000});
        await page.waitForSelector("#txt2img_prompt textarea", {timeout: 180000});
        await page.waitForFunction(() => window.MoD && MoD.editor("txt2img") && MoD.editor("img2img"));
    });

    after(async () => {
        if (browser) await browser.close();
        if (webui) {
            webui.stdin.end();
            await new Promise((done) => webui.once("exit", done));
        }
    });

    test("open the accordion: the panel is enabled and the editor draws the canvas", async () => {
        await openPanel();
        await page.waitForFunction(([w, h]) => {
            const ed = MoD.editor("txt2img");
            return ed.k > 0 && ed.state.view.width === w && ed.state.view.height === h;
        }, [W, H]);
        const g = await geometry();
        const box = await page.locator("#mod_txt2img_editor canvas").boundingBox();
        assert.ok(Math.abs(box.width / box.height - W / H) < 0.02, `canvas ${box.width}x${box.height} for ${W}x${H}`);
        assert.ok(g.k > 1);
    });

    test("the default grid is \"auto\": sliders at 0, the choice for this host's cost model and memory under the editor", async () => {
        const c = await config();
        assert.deepEqual(c.tiles, {width: "auto", height: "auto", overlap: 64, batch_size: "auto"});
        for (const id of ["tile_w", "tile_h", "batch"]) {
            assert.equal(await page.inputValue(`#mod_txt2img_${id} input[type=number]`), "0", `${id}: auto is 0`);
        }
        const got = await page.evaluate(() => {
            const host = gradioApp().querySelector("#mod_txt2img_editor .mod-editor"), line = host.querySelector(".mod-auto");
            return {model: host.getAttribute("data-auto-model"), budget: host.getAttribute("data-auto-budget"),
                source: host.getAttribute("data-auto-source"), note: line ? line.textContent : null,
                formula: host.querySelector(".mod-formula").textContent,
                gib: MoDCore.pyFixed(+host.getAttribute("data-auto-budget") / MoDCore.GIB, 2)};
        });
        assert.ok(got.model !== null && got.budget !== null && got.source, `the panel says what auto is fitted to: ${JSON.stringify(got)}`);
        assert.ok(got.note && got.note.includes(`(${got.source})`), got.note);
        if (got.model) {
            // every side of the model's band is clamped to the 192x128 canvas: one tile, batch 1
            assert.ok(got.note.startsWith(`auto: 512x512 px tiles (1 of them, ${W}x${H} on this canvas), batch 1: `), got.note);
            assert.ok(got.note.includes(` predicted by ${got.model} for ${got.gib} GiB (${got.source}): `), got.note);
            assert.ok(got.formula.includes(`cost model ${got.model},`), got.formula);
        } else {
            assert.equal(got.note, `auto: 768x768 px tiles, batch 4 (the fixed default: ${got.source})`, "no cost model for this host");
        }
    });

    test("every control says what it does and its range", async () => {
        const missing = await page.evaluate(() => {
            const ids = ["mode", "passes", "weighting", "variance", "tile_w", "tile_h", "overlap", "batch", "vae_tiling", "vae_tile",
                "up2x", "upqhd", "up4k", "preset", "refresh", "load", "delete", "save_name", "save", "import", "export"];
            return ids.filter((id) => {
                const el = gradioApp().querySelector("#mod_txt2img_" + id);
                return !el || !(el.title || "").trim();
            });
        });
        assert.deepEqual(missing, []);
        const editorTitles = await page.$$eval("#mod_txt2img_editor .mod-btn, #mod_txt2img_editor .mod-field",
            (els) => els.filter((e) => !e.title).length);
        assert.equal(editorTitles, 0);
    });

    test("draw three regions and give each a prompt", async () => {
        await page.check("#mod_txt2img_mode input[value=regions]");
        for (const [i, r] of REGIONS.entries()) {
            const g = await geometry();
            const [x, y, w, h] = r.box;
            // Ctrl+drag draws even where another region is already
            await page.keyboard.down("Control");
            await page.mouse.move(g.left + (x + 2) * g.k, g.top + (y + 2) * g.k);
            await page.mouse.down();
            await page.mouse.move(g.left + (x + w - 2) * g.k, g.top + (y + h - 2) * g.k, {steps: 6});
            await page.mouse.up();
            await page.keyboard.up("Control");
            await configWhen((c) => c.regions.length === i + 1);
            await page.fill("#mod_txt2img_editor textarea[data-field=prompt]", r.prompt);
            await configWhen((c) => c.regions[i].prompt === r.prompt);
        }
        const c = await config();
        assert.deepEqual(c.regions.map((r) => [r.x, r.y, r.width, r.height]), REGIONS.map((r) => r.box));
        assert.equal(c.tiles, undefined);
        assert.deepEqual(c.canvas, {width: W, height: H});
        await page.waitForTimeout(500); // the validator's round trip
        assert.equal(await page.locator("#mod_txt2img_problems .mod-error").count(), 0, "the Python validator accepts it");
        await page.locator("#mod_txt2img_enabled").screenshot({path: path.join(outDir(), "webui-panel.png")});
    });

    test("generate: the infotext carries the regions drawn", async () => {
        await page.click("#txt2img_generate");
        await page.waitForFunction(() => /Mixture of Diffusers/.test(gradioApp().querySelector("#html_info_txt2img").textContent),
            null, {timeout: 300000});
        const text = await page.textContent("#html_info_txt2img");
        const got = infotextConfig(text);
        assert.deepEqual(got.regions.map((r) => [r.x, r.y, r.width, r.height, r.prompt]),
            REGIONS.map((r) => [...r.box, r.prompt]));
        assert.deepEqual(got.canvas, {width: W, height: H});
        assert.match(text, /Size: 192x128/);
        fs.writeFileSync(path.join(outDir(), "webui-infotext.txt"), text);
        await page.locator("#txt2img_gallery").screenshot({path: path.join(outDir(), "webui-result.png")});
    });

    test("paste: the infotext restores the regions into the panel and the editor", async () => {
        const text = await page.textContent("#html_info_txt2img");
        await loadPreset("bundled/upscale-2x");
        await configWhen((c) => c.name === "upscale-2x");
        await page.waitForFunction(() => gradioApp().querySelector("#mod_txt2img_editor .mod-editor").dataset.regions === "0");
        assert.ok(await page.isChecked("#mod_txt2img_mode input[value=tiles]"), "the mode follows a loaded preset");
        const infotext = text.replace(/^\s+|\s+$/g, "");
        await page.fill("#txt2img_prompt textarea", infotext);
        await page.click("#paste");
        const c = await configWhen((j) => j.regions.length === 3, 30000);
        assert.deepEqual(c.regions.map((r) => r.prompt), REGIONS.map((r) => r.prompt));
        await page.waitForFunction(() => gradioApp().querySelector("#mod_txt2img_editor .mod-editor").dataset.regions === "3");
        assert.ok(await page.isChecked("#mod_txt2img_mode input[value=regions]"));
    });

    test("save the layout, reload the page, load it back and generate", async () => {
        const name = "reload test " + process.pid;
        await page.fill("#mod_txt2img_save_name textarea, #mod_txt2img_save_name input", name);
        await page.click("#mod_txt2img_save");
        await page.waitForFunction((n) => gradioApp().querySelector("#mod_txt2img_status").textContent.includes("Saved user/" + n), name);

        await page.reload({timeout: 180000});
        await page.waitForSelector("#txt2img_prompt textarea", {timeout: 180000});
        await page.waitForFunction(() => window.MoD && MoD.editor("txt2img"));
        await openPanel();
        await page.click("#mod_txt2img_refresh");  // the list was built before the preset was saved
        await page.waitForTimeout(500);
        await loadPreset("user/" + name);
        const c = await configWhen((j) => j.name === name && j.regions.length === 3, 30000);
        assert.deepEqual(c.regions.map((r) => [r.x, r.y, r.width, r.height, r.prompt]), REGIONS.map((r) => [...r.box, r.prompt]));
        await page.waitForFunction(() => gradioApp().querySelector("#mod_txt2img_editor .mod-editor").dataset.regions === "3");

        await page.click("#txt2img_generate");
        await page.waitForFunction(() => /Mixture of Diffusers/.test(gradioApp().querySelector("#html_info_txt2img").textContent),
            null, {timeout: 300000});
        const got = infotextConfig(await page.textContent("#html_info_txt2img"));
        assert.deepEqual(got.regions.map((r) => [r.x, r.y, r.width, r.height, r.prompt]), REGIONS.map((r) => [...r.box, r.prompt]));

        await page.click("#mod_txt2img_delete");  // leave no preset behind
        await page.waitForSelector("#mod_txt2img_confirm", {state: "visible"});
        await page.click("#mod_txt2img_confirm_yes");
        await page.waitForFunction(() => gradioApp().querySelector("#mod_txt2img_status").textContent.includes("Deleted"));
    });

    test("save, refuse to overwrite without asking, overwrite when confirmed, delete", async () => {
        const name = "js test " + process.pid;
        await page.fill("#mod_txt2img_save_name textarea, #mod_txt2img_save_name input", name);
        await page.click("#mod_txt2img_save");
        await page.waitForFunction((n) => gradioApp().querySelector("#mod_txt2img_status").textContent.includes("Saved user/" + n), name);
        if (info.data_dir) {
            const file = path.join(info.data_dir, "mixture_of_diffusers_presets", name + ".json");
            assert.equal(JSON.parse(fs.readFileSync(file, "utf8")).regions.length, 3);
        }
        await page.click("#mod_txt2img_save");
        await page.waitForSelector("#mod_txt2img_confirm", {state: "visible"});
        assert.match(await page.textContent("#mod_txt2img_confirm_text"), /exists/);
        await page.click("#mod_txt2img_confirm_yes");
        await page.waitForSelector("#mod_txt2img_confirm", {state: "hidden"});
        await page.waitForFunction(() => gradioApp().querySelector("#mod_txt2img_status").textContent.includes("Saved"));
        await page.click("#mod_txt2img_delete");
        await page.waitForSelector("#mod_txt2img_confirm", {state: "visible"});
        await page.click("#mod_txt2img_confirm_yes");
        await page.waitForFunction(() => gradioApp().querySelector("#mod_txt2img_status").textContent.includes("Deleted"));
        if (info.data_dir) assert.ok(!fs.existsSync(path.join(info.data_dir, "mixture_of_diffusers_presets", name + ".json")));
    });

    test("the paper's composition: load it, take over its canvas, draw it", async () => {
        await loadPreset("bundled/paper-fig4-composition");
        await configWhen((c) => c.name === "paper-fig4-composition");
        await page.waitForFunction(() => gradioApp().querySelector("#mod_txt2img_editor .mod-editor").dataset.regions === "3");
        await page.click("#mod_txt2img_editor [data-act=use-preset-canvas]");
        await page.waitForFunction(() => MoD.editor("txt2img").state.view.width === 1408 && MoD.editor("txt2img").state.view.height === 640);
        assert.equal(await page.inputValue("#txt2img_width input[type=number]"), "1408");
        await page.click("#mod_txt2img_editor .mod-list [data-index='1']");
        await page.waitForFunction(() => MoD.editor("txt2img").state.selected === 1);
        assert.match(await page.textContent("#mod_txt2img_editor .mod-readout"), /Region 2: x 384, y 0, 640×640 px/);
        await page.mouse.move(0, 0);
        await page.locator("#mod_txt2img_editor .mod-editor").screenshot({path: path.join(outDir(), "webui-editor.png")});
    });

    test("import a JSON file; the validator names a bad field", async () => {
        const file = path.join(outDir(), "import-me.json");
        fs.writeFileSync(file, JSON.stringify({version: 1, name: "imported", tiles: {width: 512, height: 512, overlap: 96, batch_size: 2}}));
        const [chooser] = await Promise.all([page.waitForEvent("filechooser"), page.click("#mod_txt2img_import")]);
        await chooser.setFiles(file);
        const c = await configWhen((j) => j.name === "imported", 30000);
        assert.equal(c.tiles.overlap, 96);
        await page.waitForFunction(() => gradioApp().querySelector("#mod_txt2img_overlap input[type=number]").value === "96");
        const bad = JSON.stringify({version: 1, regions: [{x: 0, y: 0, width: 64, height: 64, cfg_scale: -1}]}, null, 2);
        await page.click("#mod_txt2img_json .label-wrap");
        await page.fill("#mod_txt2img_config textarea", bad);
        await page.waitForFunction(() => /regions\[0\]\.cfg_scale/.test(gradioApp().querySelector("#mod_txt2img_problems").textContent));
        await page.waitForFunction(() => gradioApp().querySelector("#mod_txt2img_editor .mod-editor").dataset.regions === "1");
    });

    test("4K UHD in txt2img: 1920x1080, hires fix 2x, the upscale grid", async () => {
        await page.click("#mod_txt2img_up4k");
        const c = await configWhen((j) => j.tiles && j.tiles.overlap === 128);
        assert.deepEqual(c.tiles, {width: 768, height: 768, overlap: 128, batch_size: "auto"});
        await page.waitForFunction(() => gradioApp().querySelector("#txt2img_hr-visible-checkbox").checked);
        assert.equal(await page.inputValue("#txt2img_width input[type=number]"), "1920");
        assert.equal(await page.inputValue("#txt2img_height input[type=number]"), "1080");
        assert.equal(await page.inputValue("#txt2img_hr_scale input[type=number]"), "2");
        await page.waitForFunction(() => /Hires pass 3840×2160 · tiles 6×4 = 24/.test(
            gradioApp().querySelector("#mod_txt2img_editor .mod-stats").textContent));
        await page.locator("#mod_txt2img_editor .mod-editor").screenshot({path: path.join(outDir(), "webui-4k.png")});
    });

    test("img2img has its own editor, at the aspect ratio of its size", async () => {
        await page.click("#tabs > .tab-nav > button:nth-child(2)");
        await setNumber("img2img_width", 768);
        await setNumber("img2img_height", 384);
        await page.click("#mod_img2img_enabled .label-wrap");
        await page.waitForFunction(() => MoD.editor("img2img").k > 0 && MoD.editor("img2img").state.view.width === 768);
        const box = await page.locator("#mod_img2img_editor canvas").boundingBox();
        assert.ok(Math.abs(box.width / box.height - 2) < 0.02, `${box.width}x${box.height}`);
        assert.equal(await page.locator("#mod_img2img_passes").isVisible(), false, "no hires passes in img2img");
        const untitled = await page.evaluate(() => ["upscaler", "upscale_target", "upscale_scale", "upscale_width", "upscale_height",
            "upscale_fit", "upscale_guide", "vae_tiling", "vae_tile"].filter((id) => {
            const el = gradioApp().querySelector("#mod_img2img_" + id);
            return !el || !(el.title || "").trim();
        }));
        assert.deepEqual(untitled, [], "the Upscale and Tiled VAE controls say what they do");
        // an image to upscale: 2x writes the upscale section and the canvas is its target
        const source = path.join(ROOT, "docs", "plan-composition.png");
        const [chooser] = await Promise.all([page.waitForEvent("filechooser"), page.click("#img2img_image")]);
        await chooser.setFiles(source);
        await page.waitForFunction(() => {
            const img = gradioApp().querySelector("#mode_img2img > div[style=\"display: block;\"] img");
            return img && img.naturalWidth > 0;
        });
        const natural = await page.evaluate(() => {
            const img = gradioApp().querySelector("#mode_img2img > div[style=\"display: block;\"] img");
            return [img.naturalWidth, img.naturalHeight];
        });
        await page.click("#mod_img2img_up2x");
        const want = await page.evaluate(([w, h]) => MoDCore.upscaleTarget({scale: 2}, w, h), natural);
        await page.waitForFunction(([w, h]) => {
            const v = MoD.editor("img2img").state.view;
            return v.width === w && v.height === h;
        }, [want.width, want.height]);
        const img2imgConfig = async () => JSON.parse(await page.inputValue("#mod_img2img_config textarea"));
        assert.deepEqual((await img2imgConfig()).upscale, {upscaler: "Lanczos", scale: 2, fit: "crop", guide_strength: 0});
        assert.ok(await page.isChecked("#mod_img2img_upscale_target input[value='2x']"));
        assert.equal(await page.inputValue("#img2img_scale input[type=number]"), "1", "the WebUI's Resize by is left alone");
        assert.match(await page.textContent("#mod_img2img_editor .mod-upscale-note"),
            new RegExp(`source ${natural[0]}×${natural[1]} → target ${want.width}×${want.height} \\(crop\\)`));
        // the Upscaler dropdown: Python sets it from the JSON; choosing one writes the JSON
        await page.evaluate(() => {
            const ta = gradioApp().querySelector("#mod_img2img_config textarea"), c = JSON.parse(ta.value);
            c.upscale.upscaler = "Nearest";
            ta.value = JSON.stringify(c, null, 2);
            updateInput(ta);
        });
        await page.waitForFunction(() => gradioApp().querySelector("#mod_img2img_upscaler input").value === "Nearest");
        await page.fill("#mod_img2img_upscaler input", "Lanczos");
        await page.keyboard.press("Enter");
        const end = Date.now() + 10000;
        while ((await img2imgConfig()).upscale.upscaler !== "Lanczos") {
            assert.ok(Date.now() < end, "the JSON follows the Upscaler dropdown");
            await page.waitForTimeout(100);
        }
        await page.locator("#mod_img2img_editor .mod-editor").screenshot({path: path.join(outDir(), "webui-img2img.png")});
    });

    test("no console errors from the extension", async () => {
        const ours = errors.filter((e) => !HOST_ERRORS.test(e));
        assert.deepEqual(ours, []);
    });
});
