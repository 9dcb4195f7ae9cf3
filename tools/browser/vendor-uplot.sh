#!/usr/bin/env bash
# Copies uPlot (pinned in package.json, integrity in package-lock.json) from npm into
# crates/output/assets/uplot/, where the report and the dashboard embed it. Run after
# changing its version; the copy is committed so that builds need no network.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund >/dev/null
dst=../../crates/output/assets/uplot
mkdir -p "$dst"
cp node_modules/uplot/dist/uPlot.iife.min.js node_modules/uplot/dist/uPlot.min.css \
  node_modules/uplot/LICENSE "$dst/"
version=$(node -p 'require("uplot/package.json").version')
echo "uPlot $version copied to $dst"
