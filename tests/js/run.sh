#!/usr/bin/env bash
# The JavaScript tests of the panel: node unit tests of javascript/ (pure parts, with planner
# parity against lib_mixture through python3), Playwright browser tests on tests/js/page.html
# with Debian's chromium, and, when MOD_WEBUI_DIR is set, the same flow in a real WebUI.
#
# Installs what it needs: chromium (apt-get, when /usr/bin/chromium is missing) and the npm
# packages (npm ci). Exits non-zero on any failure. Screenshots: $MOD_JS_OUT (default
# ${TMPDIR:-/tmp}/mod-js-out).
#
#     bash tests/js/run.sh                   # unit + browser tests
#     MOD_WEBUI_DIR=/work/webui bash tests/js/run.sh   # + the real WebUI (needs its venv)
set -euo pipefail
cd "$(dirname "$0")/../.."

CHROMIUM=${MOD_CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$CHROMIUM" ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "tests/js/run.sh: no chromium at $CHROMIUM and no apt-get to install it (set MOD_CHROMIUM)" >&2
    exit 1
  fi
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "tests/js/run.sh: installing chromium with apt-get"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

for tool in node npm python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "tests/js/run.sh: $tool is required" >&2
    exit 1
  fi
done
NODE_MAJOR=$(node -p 'process.versions.node.split(".")[0]')
if [ "$NODE_MAJOR" -lt 20 ]; then
  echo "tests/js/run.sh: node 20 or newer is required (found $(node --version))" >&2
  exit 1
fi

npm ci --no-audit --no-fund --loglevel=error

export MOD_JS_OUT=${MOD_JS_OUT:-${TMPDIR:-/tmp}/mod-js-out}
mkdir -p "$MOD_JS_OUT"
echo "tests/js/run.sh: node $(node --version), $("$CHROMIUM" --version 2>/dev/null | head -n1), screenshots in $MOD_JS_OUT"

status=0
node --test --test-reporter=spec \
  tests/js/core.test.js \
  tests/js/editor.browser.test.mjs \
  tests/js/real_webui.test.mjs || status=$?
exit "$status"
