#!/usr/bin/env bash
# What the browser tests (tests/browser) need: Debian's Chromium and Playwright's driver
# (playwright-core, pinned in tools/browser/package-lock.json), installed when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ]; then
  echo "installing Debian's chromium"
  apt-get install -y -qq chromium >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq chromium; }
fi
/usr/bin/chromium --version
if ! command -v node >/dev/null 2>&1; then
  echo "installing Node.js (Debian's)"
  apt-get install -y -qq nodejs npm >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq nodejs npm; }
fi
if [ ! -d tools/browser/node_modules/playwright-core ]; then
  (cd tools/browser && npm ci --no-audit --no-fund)
fi
node -p '"playwright-core " + require("./tools/browser/node_modules/playwright-core/package.json").version'
