"""Start a real WebUI (tests/webui/launcher.py) with this repository as an extension, for
tests/js/real_webui.test.mjs. Prints one JSON line ({"url", "data_dir", "log"}) once it is up,
then keeps it running until stdin closes or SIGTERM/SIGINT arrives.

Needs MOD_WEBUI_DIR. The checkpoint: MOD_TINY_CKPT, or a tiny random one built with the
WebUI's own interpreter (tests/webui/tiny_checkpoint.py) into a temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "webui"))

import launcher  # noqa: E402


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="mod-js-webui-"))
    python = launcher.default_webui_python(launcher.default_webui_dir())
    ui = launcher.WebUI(launcher.tiny_checkpoint(tmp, python), extensions={"sd-webui-mixture-of-diffusers": ROOT},
                        data_dir=tmp / "data", log_path=tmp / "webui.log")
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    ui.start()
    try:
        print(json.dumps({"url": ui.base_url, "data_dir": str(ui.data_dir), "log": str(ui.log_path)}), flush=True)
        threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
        done.wait()
    finally:
        ui.stop()
        if not os.environ.get("MOD_KEEP_WEBUI_DATA"):
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
