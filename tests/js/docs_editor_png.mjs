// Regenerate docs/editor.png, the picture of the panel in README's "The panel": a real WebUI
// (tests/js/webui_server.py: CPU, a tiny random checkpoint, this checkout as its extension),
// txt2img at 1024x512, the panel open in mode "both" with a 768x512 tile grid (two tiles) and
// two regions, the second one selected; a screenshot of the whole accordion.
//
//     MOD_WEBUI_DIR=/work/webui node tests/js/docs_editor_png.mjs [docs/editor.png]
//
// MOD_WEBUI_URL uses a WebUI that is already running (with this extension) instead;
// MOD_CHROMIUM names the browser (default /usr/bin/chromium), MOD_PYTHON the interpreter that
// runs webui_server.py (default python3). The refresh button is an emoji: without an emoji font
// (Debian: fonts-noto-color-emoji) chromium draws an empty box there.
import fs from "node:fs";
import path from "node:path";
import {launch} from "./browser.mjs";
import {ROOT} from "./server.mjs";
import {startWebUI} from "./webui.mjs";

const OUTPUT = path.resolve(process.argv[2] || path.join(ROOT, "docs", "editor.png"));

// What README's caption describes. Mode "both" follows from a grid and regions in one preset.
const CONFIG = {
    version: 1,
    name: "the panel (docs/editor.png)",
    units: "px",
    canvas: {width: 1024, height: 512},
    tiles: {width: 768, height: 512, overlap: 128, batch_size: 4},
    weights: {kind: "gaussian", variance: 0.01},
    regions: [
        {x: 64, y: 48, width: 384, height: 352, prompt: "a white lighthouse on a rocky cliff, golden hour", cfg_scale: 9, weight: 3},
        {x: 560, y: 112, width: 400, height: 352, prompt: "a stormy sea with crashing waves", negative_prompt: "boats"},
    ],
};

async function main() {
    if (!process.env.MOD_WEBUI_DIR && !process.env.MOD_WEBUI_URL) throw new Error("set MOD_WEBUI_DIR (or MOD_WEBUI_URL)");
    let webui = null, browser = null;
    try {
        let url = process.env.MOD_WEBUI_URL;
        if (!url) {
            const started = await startWebUI();
            webui = started.child;
            url = started.info.url;
        }
        browser = await launch({width: 1600, height: 1200});
        const page = await browser.context.newPage();
        page.setDefaultTimeout(60000);
        await page.goto(url, {timeout: 180000});
        await page.waitForSelector("#txt2img_prompt textarea", {timeout: 180000});
        await page.waitForFunction(() => window.MoD && MoD.editor("txt2img"));

        await page.evaluate(([w, h]) => {
            for (const [id, v] of [["txt2img_width", w], ["txt2img_height", h]]) {
                const n = gradioApp().querySelector(`#${id} input[type=number]`);
                n.value = v;
                updateInput(n);
            }
        }, [CONFIG.canvas.width, CONFIG.canvas.height]);
        await page.click("#mod_txt2img_enabled .label-wrap");
        await page.waitForFunction(() => gradioApp().querySelector("#mod_txt2img_enabled-visible-checkbox").checked);
        await page.evaluate((text) => {
            const ta = gradioApp().querySelector("#mod_txt2img_config textarea");
            ta.value = text;
            updateInput(ta);
        }, JSON.stringify(CONFIG, null, 2));
        await page.waitForFunction(() => {
            const ed = MoD.editor("txt2img");
            return ed.k > 0 && ed.state.view.width === 1024 && ed.state.view.height === 512 && ed.state.mode === "both" &&
                gradioApp().querySelector("#mod_txt2img_editor .mod-editor").dataset.regions === "2";
        });
        await page.waitForFunction(() => gradioApp().querySelector("#mod_txt2img_tile_h input[type=number]").value === "512");
        await page.click("#mod_txt2img_editor .mod-list [data-index='1']");
        await page.waitForFunction(() => MoD.editor("txt2img").state.selected === 1);
        await page.waitForFunction(() => /tiles 2×1 = 2 of 768×512/.test(
            gradioApp().querySelector("#mod_txt2img_editor .mod-stats").textContent));
        await page.waitForTimeout(1000); // the validator's round trip
        const problems = (await page.textContent("#mod_txt2img_problems")).trim();
        if (problems) throw new Error(`the validator objects: ${problems}`);
        await page.mouse.move(0, 0);
        await page.evaluate(() => document.activeElement && document.activeElement.blur()); // no focus ring
        fs.mkdirSync(path.dirname(OUTPUT), {recursive: true});
        await page.locator("#mod_txt2img_enabled").screenshot({path: OUTPUT});
        console.log(`${OUTPUT}: ${fs.statSync(OUTPUT).size} bytes`);
    } finally {
        if (browser) await browser.close();
        if (webui) {
            webui.stdin.end();
            await new Promise((done) => webui.once("exit", done));
        }
    }
}

main().catch((e) => {
    console.error(e);
    process.exit(1);
});
