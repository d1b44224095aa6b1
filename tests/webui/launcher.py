"""Start a real A1111 WebUI offline on the CPU for integration tests; talk to its API.

Standard library only, so the test process needs none of the WebUI's dependencies.

    from launcher import WebUI

    with WebUI(ckpt, extensions={"sd-webui-mixture-of-diffusers": repo_root}) as ui:
        result = ui.txt2img(prompt="a cat", width=64, height=64, steps=4)
        png_bytes = ui.image_bytes(result)[0]

Where the WebUI lives: ``MOD_WEBUI_DIR`` (or ``webui_dir=``); its interpreter:
``MOD_WEBUI_PYTHON`` (or ``python=``), by default ``<webui_dir>/venv/bin/python``.

Each launch gets its own ``--data-dir`` (a temporary folder unless ``data_dir=`` is given), so
config.json, outputs, the hash cache and ``extensions/`` of one run do not leak into another
and the WebUI checkout itself is not written to.  Extensions given in ``extensions=`` are
symlinked into ``<data_dir>/extensions/`` for the duration of the run and removed afterwards.

Pitfall handled here: an HTTP request that reaches the server before its log prints
``Startup time:`` kills it (``Cannot add middleware after an application has started``), so
``start()`` waits for that line before any request is made.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

PathLike = Union[str, os.PathLike]

STARTUP_MARKER = "Startup time:"

OFFLINE_CPU_FLAGS = (
    "--skip-prepare-environment",
    "--skip-torch-cuda-test",
    "--skip-version-check",
    "--skip-python-version-check",
    "--use-cpu", "all",
    "--no-half",
    "--precision", "full",
    "--api",
    "--opt-sdp-attention",
    "--no-download-sd-model",
)

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "PYTHONUNBUFFERED": "1",  # the startup marker must reach the log file promptly
}

DEFAULT_TXT2IMG = {
    "prompt": "a photo of a cat",
    "negative_prompt": "",
    "steps": 4,
    "sampler_name": "Euler",
    "scheduler": "Automatic",
    "cfg_scale": 7.0,
    "width": 64,
    "height": 64,
    "seed": 1,
    "batch_size": 1,
    "n_iter": 1,
    "send_images": True,
    "save_images": False,
}

DEFAULT_IMG2IMG = dict(DEFAULT_TXT2IMG, denoising_strength=0.75)


class WebUIError(RuntimeError):
    """The WebUI did not start, died, or answered an API call with an HTTP error."""

    def __init__(self, message: str, status: Optional[int] = None, body: str = "",
                 log_tail: str = ""):
        text = message
        if status is not None:
            text += f" (HTTP {status}): {body[:2000]}"
        if log_tail:
            text += "\n--- WebUI log tail ---\n" + log_tail
        super().__init__(text)
        self.status = status
        self.body = body
        self.log_tail = log_tail

    def json(self) -> Any:
        return json.loads(self.body)


def default_webui_dir() -> Path:
    value = os.environ.get("MOD_WEBUI_DIR")
    if not value:
        raise WebUIError("MOD_WEBUI_DIR is not set")
    return Path(value)


def default_webui_python(webui_dir: PathLike) -> Path:
    value = os.environ.get("MOD_WEBUI_PYTHON")
    return Path(value) if value else Path(webui_dir) / "venv" / "bin" / "python"


def tiny_checkpoint(out_dir: PathLike, python: Optional[PathLike] = None) -> Path:
    """``MOD_TINY_CKPT``, or the tiny random checkpoint `tiny_checkpoint.py` builds into
    ``out_dir``: in this interpreter, or run by ``python`` (the WebUI's, for a process
    without torch and safetensors; ImportError here when this one lacks them)."""
    given = os.environ.get("MOD_TINY_CKPT")
    if given:
        return Path(given)
    builder = Path(__file__).resolve().with_name("tiny_checkpoint.py")
    if python is None:
        if str(builder.parent) not in sys.path:
            sys.path.insert(0, str(builder.parent))
        import tiny_checkpoint

        return tiny_checkpoint.build_tiny_checkpoint(out_dir)
    out = subprocess.run([str(python), str(builder), str(out_dir)], check=True, stdout=subprocess.PIPE, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def inprocess_skips(reason_hint: str = "see the module's docstring") -> list:
    """The ``pytestmark`` of a test module that boots the WebUI in its own process: skipped without a
    WebUI (``MOD_WEBUI_DIR``) or without ``MOD_WEBUI_INPROCESS=1`` (then it runs with the WebUI's python)."""
    import pytest

    return [
        pytest.mark.skipif(not webui_available(), reason="MOD_WEBUI_DIR does not point at a WebUI with a venv"),
        pytest.mark.skipif(os.environ.get("MOD_WEBUI_INPROCESS") != "1",
                           reason=f"set MOD_WEBUI_INPROCESS=1 and run with the WebUI's python ({reason_hint})"),
    ]


def controlnet_dir() -> Optional[Path]:
    """``MOD_CONTROLNET_DIR`` when it names an sd-webui-controlnet checkout, else None."""
    given = os.environ.get("MOD_CONTROLNET_DIR")
    return Path(given).resolve() if given and (Path(given) / "scripts" / "controlnet.py").is_file() else None


def controlnet_skips() -> list:
    """The ``pytestmark`` entry of a test module that needs sd-webui-controlnet."""
    import pytest

    return [pytest.mark.skipif(controlnet_dir() is None,
                               reason="MOD_CONTROLNET_DIR does not name an sd-webui-controlnet checkout")]


def boot_with_controlnet(tmp_path_factory, repo_root: PathLike) -> Dict[str, Any]:
    """Boot the WebUI in this process (the tiny checkpoint) with sd-webui-controlnet and this
    extension loaded as extensions of a fresh data folder; return the txt2img always-on scripts by
    title. ``pytest.skip`` when the process has booted another WebUI already."""
    import pytest

    import inprocess

    data = tmp_path_factory.mktemp("cn-data")
    (data / "extensions").mkdir()
    (data / "extensions" / "sd-webui-controlnet").symlink_to(controlnet_dir())
    (data / "extensions" / "sd-webui-mixture-of-diffusers").symlink_to(Path(repo_root).resolve())
    ckpt = tiny_checkpoint(tmp_path_factory.mktemp("cn-ckpt"))
    try:
        inprocess.boot(ckpt, data_dir=data, load_scripts=True)
    except RuntimeError as e:
        pytest.skip(f"run this module in its own process ({e})")
    from modules import scripts

    return {s.title(): s for s in scripts.scripts_txt2img.alwayson_scripts}


def webui_available(webui_dir: Optional[PathLike] = None) -> bool:
    """True when a WebUI checkout and its interpreter are where the env vars say."""
    try:
        wd = Path(webui_dir) if webui_dir else default_webui_dir()
    except WebUIError:
        return False
    return (wd / "launch.py").is_file() and default_webui_python(wd).exists()


def find_free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def linked_extension(extensions_dir: PathLike, source: PathLike, name: Optional[str] = None):
    """Symlink ``source`` as ``extensions_dir/name`` for the duration; remove the link after.

    Refuses to replace anything that is not already the same symlink.
    """
    src = Path(source).resolve()
    ext_dir = Path(extensions_dir)
    ext_dir.mkdir(parents=True, exist_ok=True)
    link = ext_dir / (name or src.name)
    created = False
    if link.is_symlink():
        if Path(os.readlink(link)).resolve() != src:
            raise WebUIError(f"{link} already links to {os.readlink(link)}, not {src}")
    elif link.exists():
        raise WebUIError(f"{link} exists and is not our symlink")
    else:
        link.symlink_to(src, target_is_directory=True)
        created = True
    try:
        yield link
    finally:
        if created and link.is_symlink():
            link.unlink()


def encode_image(image: Any) -> str:
    """Base64 for the API from PNG/JPEG bytes, a file path or a PIL image."""
    if isinstance(image, (bytes, bytearray)):
        data = bytes(image)
    elif isinstance(image, (str, os.PathLike)):
        data = Path(image).read_bytes()
    else:  # PIL.Image
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        data = buf.getvalue()
    return base64.b64encode(data).decode("ascii")


def decode_image(b64: str):
    """PIL image from an API base64 string (needs Pillow in the calling process)."""
    from PIL import Image

    if "," in b64[:100] and b64.startswith("data:"):
        b64 = b64.split(",", 1)[1]
    return Image.open(io.BytesIO(base64.b64decode(b64)))


class WebUI:
    """One WebUI server process. Use as a context manager, or call start()/stop()."""

    def __init__(
        self,
        ckpt: PathLike,
        *,
        webui_dir: Optional[PathLike] = None,
        python: Optional[PathLike] = None,
        port: Optional[int] = None,
        extra_args: Sequence[str] = (),
        disable_extra_extensions: bool = False,
        extensions: Optional[Mapping[str, PathLike]] = None,
        data_dir: Optional[PathLike] = None,
        log_path: Optional[PathLike] = None,
        startup_timeout: float = 300.0,
        request_timeout: float = 600.0,
        env: Optional[Mapping[str, str]] = None,
        keep_data_dir: bool = False,
    ):
        self.webui_dir = Path(webui_dir) if webui_dir else default_webui_dir()
        self.python = Path(python) if python else default_webui_python(self.webui_dir)
        self.ckpt = Path(ckpt).resolve()
        self.port = port or find_free_port()
        self.extra_args = list(extra_args)
        self.disable_extra_extensions = disable_extra_extensions
        self.extensions = dict(extensions or {})
        self._own_data_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir else None
        self.log_path = Path(log_path) if log_path else None
        self.startup_timeout = startup_timeout
        self.request_timeout = request_timeout
        self.extra_env = dict(env or {})
        self.keep_data_dir = keep_data_dir
        self.proc: Optional[subprocess.Popen] = None
        self.startup_seconds: Optional[float] = None
        self._stack: Optional[contextlib.ExitStack] = None
        self._log_file = None

    # -- lifecycle -------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> List[str]:
        cmd = [str(self.python), "launch.py", *OFFLINE_CPU_FLAGS,
               "--port", str(self.port), "--ckpt", str(self.ckpt)]
        if self.data_dir is not None:
            cmd += ["--data-dir", str(self.data_dir)]
        if self.disable_extra_extensions:
            cmd.append("--disable-extra-extensions")
        cmd += self.extra_args
        return cmd

    def environment(self) -> Dict[str, str]:
        env = dict(os.environ)
        env.pop("COMMANDLINE_ARGS", None)  # the WebUI appends it to argv
        env.pop("IGNORE_CMD_ARGS_ERRORS", None)
        env.update(OFFLINE_ENV)
        env.update(self.extra_env)
        return env

    def start(self) -> "WebUI":
        if self.proc is not None:
            raise WebUIError("already started")
        if not (self.webui_dir / "launch.py").is_file():
            raise WebUIError(f"no WebUI at {self.webui_dir}")
        if not self.ckpt.is_file():
            raise WebUIError(f"no checkpoint at {self.ckpt}")
        stack = contextlib.ExitStack()
        try:
            if self.data_dir is None:
                self.data_dir = Path(tempfile.mkdtemp(prefix="mod-webui-data-"))
                if not self.keep_data_dir:
                    stack.callback(shutil.rmtree, self.data_dir, True)
            self.data_dir.mkdir(parents=True, exist_ok=True)
            for name, src in self.extensions.items():
                stack.enter_context(linked_extension(self.data_dir / "extensions", src, name))
            if self.log_path is None:
                self.log_path = self.data_dir / "webui.log"
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log_path, "wb")
            stack.callback(self._log_file.close)
            t0 = time.monotonic()
            self.proc = subprocess.Popen(
                self.command(), cwd=str(self.webui_dir), env=self.environment(),
                stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
                start_new_session=True)
            stack.callback(self._terminate)
            self._stack = stack
            self._wait_for_startup(t0)
        except BaseException:
            self._stack = None
            stack.close()
            self.proc = None
            raise
        return self

    def _wait_for_startup(self, t0: float) -> None:
        deadline = t0 + self.startup_timeout
        while True:
            if STARTUP_MARKER in self.log_text():
                self.startup_seconds = time.monotonic() - t0
                return
            if self.proc.poll() is not None:
                raise WebUIError(f"WebUI exited with code {self.proc.returncode} during start-up",
                                 log_tail=self.log_tail())
            if time.monotonic() > deadline:
                raise WebUIError(f"WebUI not up after {self.startup_timeout:.0f}s",
                                 log_tail=self.log_tail())
            time.sleep(0.25)

    def _terminate(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            proc.send_signal(signal.SIGINT)  # the WebUI's handler exits at once
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its own session, started by us
            proc.wait(timeout=20)

    def stop(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()
        else:
            self._terminate()

    def __enter__(self) -> "WebUI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- log -------------------------------------------------------------------------
    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_text()[-chars:]

    def wait_for_log(self, text: str, timeout: float = 60.0, start: int = 0) -> int:
        """Wait until ``text`` appears in the log after offset ``start``; return its offset."""
        deadline = time.monotonic() + timeout
        while True:
            pos = self.log_text().find(text, start)
            if pos >= 0:
                return pos
            if not self.running:
                raise WebUIError(f"WebUI exited before logging {text!r}", log_tail=self.log_tail())
            if time.monotonic() > deadline:
                raise WebUIError(f"{text!r} not logged within {timeout}s", log_tail=self.log_tail())
            time.sleep(0.2)

    # -- HTTP ------------------------------------------------------------------------
    def request(self, method: str, path: str, payload: Any = None,
                timeout: Optional[float] = None) -> Any:
        if not self.running:
            raise WebUIError("WebUI is not running", log_tail=self.log_tail())
        data = None
        headers = {"Accept": "application/json"}
        if payload is not None:
            data = json.dumps(payload).encode("utf-8")
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base_url + path, data=data, headers=headers,
                                     method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.request_timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as err:
            body_text = err.read().decode("utf-8", errors="replace")
            raise WebUIError(f"{method} {path} failed", status=err.code, body=body_text,
                             log_tail=self.log_tail(3000)) from None
        except (urllib.error.URLError, ConnectionError, socket.timeout) as err:
            raise WebUIError(f"{method} {path} failed: {err}", log_tail=self.log_tail()) from None
        if not body:
            return None
        try:
            return json.loads(body)
        except ValueError:
            return body.decode("utf-8", errors="replace")

    def get(self, path: str, timeout: Optional[float] = None) -> Any:
        return self.request("GET", path, timeout=timeout)

    def post(self, path: str, payload: Any = None, timeout: Optional[float] = None) -> Any:
        return self.request("POST", path, {} if payload is None else payload, timeout=timeout)

    def txt2img(self, payload: Optional[Mapping[str, Any]] = None, **fields: Any) -> Dict:
        body = dict(DEFAULT_TXT2IMG)
        body.update(payload or {})
        body.update(fields)
        return self.post("/sdapi/v1/txt2img", body)

    def img2img(self, init_images: Iterable[Any], payload: Optional[Mapping[str, Any]] = None,
                **fields: Any) -> Dict:
        """``init_images``: PNG bytes, paths, PIL images or ready base64 strings."""
        body = dict(DEFAULT_IMG2IMG)
        body.update(payload or {})
        body.update(fields)
        body["init_images"] = [img if isinstance(img, str) and not os.path.exists(img)
                               else encode_image(img) for img in init_images]
        return self.post("/sdapi/v1/img2img", body)

    @staticmethod
    def image_bytes(result: Mapping[str, Any]) -> List[bytes]:
        return [base64.b64decode(b64) for b64 in result.get("images", [])]

    @staticmethod
    def images(result: Mapping[str, Any]) -> list:
        """PIL images of an API result (Pillow needed in the calling process)."""
        return [decode_image(b64) for b64 in result.get("images", [])]

    @staticmethod
    def info(result: Mapping[str, Any]) -> Dict[str, Any]:
        info = result.get("info")
        return json.loads(info) if isinstance(info, str) else (info or {})


def _smoke(argv: Optional[Sequence[str]] = None) -> int:
    """Start the WebUI, run txt2img and img2img, print timings, stop."""
    import argparse

    ap = argparse.ArgumentParser(description=_smoke.__doc__)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--disable-extra-extensions", action="store_true")
    ap.add_argument("--extension", action="append", default=[],
                    help="NAME=PATH to symlink into extensions/ (repeatable)")
    ap.add_argument("--keep-data-dir", action="store_true")
    ap.add_argument("extra", nargs="*", help="extra WebUI flags (after --)")
    args = ap.parse_args(argv)
    exts = dict(item.split("=", 1) for item in args.extension)
    with WebUI(args.ckpt, extra_args=args.extra, extensions=exts,
               disable_extra_extensions=args.disable_extra_extensions,
               keep_data_dir=args.keep_data_dir) as ui:
        print(f"started on {ui.base_url} in {ui.startup_seconds:.1f}s; data dir {ui.data_dir}")
        t = time.monotonic()
        res = ui.txt2img(width=args.size, height=args.size, steps=args.steps)
        print(f"txt2img {args.size}px {args.steps} steps: {time.monotonic() - t:.2f}s, "
              f"{len(res['images'])} image(s), seed {ui.info(res).get('seed')}")
        t = time.monotonic()
        res2 = ui.img2img([res["images"][0]], width=args.size, height=args.size,
                          steps=args.steps)
        print(f"img2img: {time.monotonic() - t:.2f}s, {len(res2['images'])} image(s)")
    return 0


if __name__ == "__main__":
    sys.exit(_smoke())
