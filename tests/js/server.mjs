// A tiny static server on 127.0.0.1 for the editor's test page: the page itself (with a script
// tag per javascript/*.js, in the WebUI's order), the extension's javascript/ and style.css, and
// the bundled presets (plus their index).
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import {fileURLToPath} from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const PAGE = path.join(ROOT, "tests", "js", "page.html");
const SCRIPTS = "<!-- the extension's scripts -->";
const TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
    ".json": "application/json; charset=utf-8"};

function resolve(urlPath) {
    const p = decodeURIComponent(urlPath.split("?")[0]);
    if (p === "/" || p === "/page.html") return PAGE;
    if (p === "/style.css") return path.join(ROOT, "style.css");
    const m = /^\/(javascript|presets)\/([\w.-]+\.(?:js|json))$/.exec(p);
    return m ? path.join(ROOT, m[1], m[2]) : null;
}

/** The extension's scripts in the order the WebUI includes them: javascript/*.js sorted by name (list_scripts). */
export function scriptNames() {
    return fs.readdirSync(path.join(ROOT, "javascript")).filter((f) => f.endsWith(".js")).sort();
}

/** tests/js/page.html with a script tag per scriptNames() where it says so. */
function page() {
    const tags = scriptNames().map((f) => `<script src="/javascript/${f}"></script>`).join("\n");
    return fs.readFileSync(PAGE, "utf8").replace(SCRIPTS, tags);
}

export function presetNames() {
    return fs.readdirSync(path.join(ROOT, "presets")).filter((f) => f.endsWith(".json")).sort().map((f) => f.slice(0, -5));
}

export function startServer() {
    const server = http.createServer((req, res) => {
        if (resolve(req.url) === PAGE) {
            res.writeHead(200, {"Content-Type": TYPES[".html"], "Cache-Control": "no-store"});
            res.end(page());
            return;
        }
        if (req.url === "/presets/index.json") {
            res.writeHead(200, {"Content-Type": TYPES[".json"]});
            res.end(JSON.stringify(presetNames()));
            return;
        }
        const file = resolve(req.url);
        if (!file || !fs.existsSync(file)) {
            res.writeHead(404, {"Content-Type": "text/plain"});
            res.end("not found");
            return;
        }
        res.writeHead(200, {"Content-Type": TYPES[path.extname(file)] || "application/octet-stream", "Cache-Control": "no-store"});
        fs.createReadStream(file).pipe(res);
    });
    return new Promise((ok) => {
        server.listen(0, "127.0.0.1", () => {
            const {port} = server.address();
            ok({url: `http://127.0.0.1:${port}`, close: () => new Promise((done) => server.close(done))});
        });
    });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) { // node tests/js/server.mjs: serve until stopped
    startServer().then((s) => console.log(`${s.url}/page.html`));
}
