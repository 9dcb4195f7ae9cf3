// Loads a floodwatch page in headless Chromium (Debian's) and checks what a person would see:
// charts drawn (uPlot canvases with pixels set), incident rows, no network request except to
// the page's own server (a report file: none at all); writes a screenshot.
//
//   node check.js report  FILE.html SHOT.png
//   node check.js dashboard URL SHOT.png [DEVICE_SHOT.png]
//
// Exits 0 when every check passes, 1 with the failures listed otherwise, 2 when Chromium
// cannot be started.
"use strict";
const fs = require("fs");
const os = require("os");
const path = require("path");
const { chromium } = require("playwright-core");

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
];

const failures = [];
function check(ok, what) {
  console.log((ok ? "ok   " : "FAIL ") + what);
  if (!ok) failures.push(what);
}

// Canvases of uPlot charts, and how many of each one's pixels are not transparent.
async function drawnCharts(page) {
  return page.evaluate(() => Array.from(document.querySelectorAll(".uplot canvas")).map((c) => {
    const ctx = c.getContext("2d");
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    let set = 0;
    for (let i = 3; i < d.length; i += 4) if (d[i] !== 0) set++;
    return { w: c.width, h: c.height, set };
  }));
}

async function main() {
  const [mode, target, shot, deviceShot] = process.argv.slice(2);
  if (!mode || !target || !shot) {
    console.error("usage: node check.js report FILE SHOT | dashboard URL SHOT [DEVICE_SHOT]");
    process.exit(2);
  }
  if (!fs.existsSync(CHROMIUM)) {
    console.error(`no Chromium at ${CHROMIUM}: install Debian's (apt-get install -y chromium)`);
    process.exit(2);
  }
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "fw-chromium-"));
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM, headless: true, args: ARGS,
      viewport: { width: 1366, height: 900 }, deviceScaleFactor: 1,
    });
  } catch (e) {
    console.error(`cannot start ${CHROMIUM}: ${e.message}`);
    process.exit(2);
  }
  try {
    const page = context.pages()[0] || (await context.newPage());
    const requests = [];
    page.on("request", (r) => requests.push(r.url()));
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });

    if (mode === "report") {
      const url = "file://" + path.resolve(target);
      const t0 = Date.now();
      await page.goto(url, { waitUntil: "load" });
      await page.waitForFunction(() => window.FW_REPORT !== undefined, null, { timeout: 30000 });
      const ms = Date.now() - t0;
      console.log(`report loaded and drawn in ${ms} ms`);
      const nCharts = await page.evaluate(() => window.FW_REPORT.charts.length);
      const nDevices = await page.evaluate(() => window.FW_REPORT.data.devices.length);
      const rows = await page.locator("#incident-table tr.incident").count();
      const wanted = await page.evaluate(() => window.FW_REPORT.data.incidents.length);
      const drawn = await drawnCharts(page);
      check(nDevices > 0, `devices charted: ${nDevices}`);
      check(nCharts >= nDevices * 2, `uPlot instances: ${nCharts} (at least a vector and a sources chart per device)`);
      check(drawn.length >= nCharts && drawn.every((c) => c.set > 500),
        `every chart canvas has pixels drawn (${drawn.map((c) => c.set).slice(0, 6).join(", ")}...)`);
      check(wanted > 0 && rows === wanted, `incident rows: ${rows} of ${wanted}`);
      // Campaigns and pulses: every incident in a campaign names it, and a pulse flood lists
      // each of its pulses (the simulated export has one with four).
      const camp = await page.evaluate(() => {
        const inc = window.FW_REPORT.data.incidents;
        const rows = [...document.querySelectorAll("#incident-table tr.incident")];
        const named = rows.filter((r, i) => inc[i].campaign && r.querySelector(".campaign") &&
          r.querySelector(".campaign").textContent.includes(inc[i].campaign)).length;
        const wantedPulses = inc.filter((i) => i.pulses.length > 1).reduce((n, i) => n + i.pulses.length, 0);
        return { named, wanted: inc.filter((i) => i.campaign).length, shared: document.querySelectorAll("#incident-table .campaign").length,
          multi: [...document.querySelectorAll("#incident-table .campaign")].filter((c) => / incidents\)$/.test(c.textContent)).length,
          pulses: document.querySelectorAll("#incident-table ul.pulses li").length, wantedPulses };
      });
      check(camp.wanted > 0 && camp.named === camp.wanted && camp.shared === camp.wanted,
        `campaign shown on every incident in one: ${camp.named} of ${camp.wanted}`);
      check(camp.multi > 0, `campaigns of several incidents say so: ${camp.multi} rows`);
      check(camp.wantedPulses > 0 && camp.pulses === camp.wantedPulses, `pulses listed: ${camp.pulses} of ${camp.wantedPulses}`);
      const marked = await page.evaluate(() => window.FW_REPORT.data.devices.some((d) => d.alerts.length > 0));
      check(marked, "some device has alert bins marked");
      // Zoom: a drag across the first chart narrows its x scale.
      const over = page.locator(".uplot .u-over").first();
      await over.scrollIntoViewIfNeeded();
      const box = await over.boundingBox();
      const before = await page.evaluate(() => { const u = window.FW_REPORT.charts[0]; return u.scales.x.max - u.scales.x.min; });
      await page.mouse.move(box.x + box.width * 0.3, box.y + box.height / 2);
      await page.mouse.down();
      await page.mouse.move(box.x + box.width * 0.6, box.y + box.height / 2, { steps: 5 });
      await page.mouse.up();
      const after = await page.evaluate(() => { const u = window.FW_REPORT.charts[0]; return u.scales.x.max - u.scales.x.min; });
      check(after < before * 0.5, `drag-zoom narrows the time axis (${Math.round(before)} s -> ${Math.round(after)} s)`);
      await page.mouse.dblclick(box.x + box.width / 2, box.y + box.height / 2);
      const external = requests.filter((u) => u !== url);
      check(external.length === 0, `no request but the file itself (${external.length}: ${external.slice(0, 3).join(" ")})`);
      check(errors.length === 0, `no script error (${errors.join(" | ")})`);
      // The top (summary, incidents), then the first device with alerts, as a person scrolls.
      await page.evaluate(() => window.scrollTo(0, 0));
      await page.screenshot({ path: shot, fullPage: false });
      const devShot = shot.replace(/\.png$/, "-device.png");
      const alerted = await page.evaluate(() => {
        const d = window.FW_REPORT.data.devices.find((x) => x.alerts.length > 0);
        return d ? "dev-" + encodeURIComponent(d.name) : null;
      });
      if (alerted) {
        await page.evaluate((id) => document.getElementById(id).scrollIntoView(), alerted);
        await page.screenshot({ path: devShot, fullPage: false });
      }
      // A PDF of the report, to see that printing works (Chromium headless prints).
      const pdf = await page.pdf({ format: "A4", printBackground: true });
      check(pdf.length > 10000, `prints to PDF (${pdf.length} bytes)`);
      if (process.env.FW_LOAD_LIMIT_MS) {
        check(ms < Number(process.env.FW_LOAD_LIMIT_MS), `opens in under ${process.env.FW_LOAD_LIMIT_MS} ms (${ms} ms)`);
      }
    } else if (mode === "dashboard") {
      const origin = new URL(target).origin;
      await page.goto(target, { waitUntil: "load" });
      await page.waitForFunction(() => window.FW_DASH && window.FW_DASH.ready, null, { timeout: 30000 });
      await page.waitForFunction(() => document.querySelectorAll("#devices tr.device").length > 0 &&
        document.querySelectorAll(".spark .uplot canvas").length > 0, null, { timeout: 30000 });
      const devs = await page.locator("#devices tr.device").count();
      check(devs > 0, `device rows: ${devs}`);
      const states = await page.locator("#devices tr.device .state").allTextContents();
      check(states.every((s) => ["normal", "suppressed surge", "under attack"].includes(s.trim())), `states shown: ${[...new Set(states)].join(", ")}`);
      const drawn = await drawnCharts(page);
      check(drawn.length >= devs && drawn.filter((c) => c.set > 20).length >= devs, `sparklines drawn: ${drawn.filter((c) => c.set > 20).length}`);
      await page.waitForFunction(() => document.querySelectorAll("#incidents tr.incident").length > 0, null, { timeout: 30000 }).catch(() => {});
      const inc = await page.locator("#incidents tr.incident").count();
      check(inc > 0, `incident rows: ${inc}`);
      const sources = await page.locator("#incidents tr.incident td:nth-child(7) div").allTextContents();
      check(sources.length > 0 && sources.every((s) => /^[0-9a-f.:]+ \([0-9,]+\)$/.test(s)), `top sources shown as address (count): ${sources.slice(0, 2).join(", ")}`);
      const campaigns = await page.locator("#incidents tr.incident .campaign").allTextContents();
      check(campaigns.length > 0 && campaigns.every((c) => /^campaign FW-campaign-/.test(c)), `campaign shown: ${campaigns.slice(0, 1).join("")}`);
      const health = await page.locator("#inputs tr.input").count();
      check(health > 0, `input health rows: ${health}`);
      // Live: an SSE update arrives without reloading.
      const n0 = await page.evaluate(() => window.FW_DASH.updates);
      await page.waitForFunction((n) => window.FW_DASH.updates > n, n0, { timeout: 15000 }).catch(() => {});
      const n1 = await page.evaluate(() => window.FW_DASH.updates);
      check(n1 > n0, `live updates arrive by server-sent events (${n0} -> ${n1})`);
      await page.screenshot({ path: shot, fullPage: false });
      if (deviceShot) {
        const attacked = await page.evaluate(() => window.FW_DASH.attackedDevice());
        check(!!attacked, `a device under attack or with incidents to show: ${attacked}`);
        await page.goto(origin + "/device/" + encodeURIComponent(attacked || ""), { waitUntil: "load" });
        await page.waitForFunction(() => window.FW_DASH && window.FW_DASH.ready &&
          document.querySelectorAll("#device-charts .uplot canvas").length > 0, null, { timeout: 30000 });
        const dd = await drawnCharts(page);
        check(dd.length > 0 && dd.every((c) => c.set > 200), `device page charts drawn: ${dd.length}`);
        const marks = await page.evaluate(() => window.FW_DASH.marks);
        check(marks > 0, `alert bins marked on the device page: ${marks}`);
        await page.screenshot({ path: deviceShot, fullPage: false });
      }
      const foreign = requests.filter((u) => !u.startsWith(origin + "/"));
      check(foreign.length === 0, `no request but to ${origin} (${foreign.length}: ${foreign.slice(0, 3).join(" ")})`);
      check(errors.length === 0, `no script error (${errors.join(" | ")})`);
    } else {
      console.error(`unknown mode ${mode}`);
      process.exit(2);
    }
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  if (failures.length) {
    console.error(`${failures.length} check(s) failed:\n  ` + failures.join("\n  "));
    process.exit(1);
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
