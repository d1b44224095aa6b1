// Debian's chromium, headless, through playwright-core: a fresh profile per launch, no network
// services, no sandbox (containers). MOD_CHROMIUM overrides the executable.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {chromium} from "playwright-core";

export const CHROMIUM = process.env.MOD_CHROMIUM || "/usr/bin/chromium";
export const OUT = process.env.MOD_JS_OUT || path.join(os.tmpdir(), "mod-js-out");

export async function launch({width = 1500, height = 1100} = {}) {
    const profile = fs.mkdtempSync(path.join(os.tmpdir(), "mod-chromium-"));
    const context = await chromium.launchPersistentContext(profile, {
        executablePath: CHROMIUM,
        headless: true,
        viewport: {width, height},
        args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"],
    });
    const close = async () => {
        await context.close();
        fs.rmSync(profile, {recursive: true, force: true});
    };
    return {context, close};
}

/** Collect console errors and uncaught exceptions of a page. */
export function watchErrors(page) {
    const errors = [];
    page.on("console", (m) => { if (m.type() === "error") errors.push(`console: ${m.text()}`); });
    page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}\n${(e.stack || "").split("\n").slice(1, 3).join("\n")}`));
    return errors;
}

export function outDir() {
    fs.mkdirSync(OUT, {recursive: true});
    return OUT;
}
