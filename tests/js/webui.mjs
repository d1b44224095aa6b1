// A real WebUI for the browser tests and the docs picture: tests/js/webui_server.py started as a
// child process (MOD_PYTHON runs it, default python3); resolves with the child and the JSON line
// it prints once the WebUI is up ({url, ...}).
import {spawn} from "node:child_process";
import path from "node:path";
import readline from "node:readline";
import {ROOT} from "./server.mjs";

export function startWebUI() {
    return new Promise((resolve, reject) => {
        const child = spawn(process.env.MOD_PYTHON || "python3", [path.join(ROOT, "tests", "js", "webui_server.py")],
            {stdio: ["pipe", "pipe", "inherit"]});
        const lines = readline.createInterface({input: child.stdout});
        lines.once("line", (line) => resolve({child, info: JSON.parse(line)}));
        child.once("exit", (code) => reject(new Error(`the WebUI helper exited with ${code} before it was up`)));
    });
}
