// The live dashboard: overview at "/", a device's page at "/device/NAME". Reads the JSON API
// of the server it came from and redraws on each server-sent "view" event.
"use strict";
(function () {
  var el = FW.el, app = document.getElementById("app");
  var DAY = 86400;
  var dash = window.FW_DASH = { ready: false, updates: 0, marks: 0, attackedDevice: attackedDevice };
  var path = location.pathname;
  var deviceName = path.indexOf("/device/") === 0 ? decodeURIComponent(path.slice(8)) : null;
  var last = { view: null, sealed: -1, incidents: null, reasons: {} };
  var sparkCache = {}; // device -> {sealed, series}
  var deviceCharts = [];

  function getJSON(url) {
    return fetch(url, { headers: { Accept: "application/json" } }).then(function (r) {
      if (!r.ok) throw new Error(url + ": HTTP " + r.status);
      return r.json();
    });
  }
  function secs(rfc) { return rfc ? Date.parse(rfc) / 1000 : null; }
  function nsToS(ns) { return Math.floor(ns / 1e9); }
  var GI = { web: 0, syn: 1, udp: 2, icmp: 3 };

  // The state a person reads: an open incident is an attack; a last sealed bin that alerted
  // but was suppressed is a suppressed surge; otherwise normal.
  function stateOf(d, series) {
    if (d.IncidentId) return "under attack";
    var bins = series && series.bins;
    if (bins && bins.length) {
      var b = bins[bins.length - 1];
      if (b.Alert && b.Suppressed) return "suppressed surge";
    }
    return "normal";
  }
  function stateClass(s) {
    return s === "under attack" ? "state-attack" : s === "suppressed surge" ? "state-suppressed" : "state-normal";
  }

  // The group that stands out most now: highest rate against its baseline.
  function mainGroup(d) {
    var best = 0, score = -1;
    for (var g = 0; g < 4; g++) {
      var e = d.Expected ? d.Expected[g] : 0;
      var c = d.Counts[g] / Math.max(d.Elapsed || 0, 0.05);
      var sc = c / Math.max(e, 1) + (c > 0 ? 1e-9 * c : 0);
      if (sc > score) { score = sc; best = g; }
    }
    return best;
  }

  function seriesColumns(bins, g) {
    var xs = [], ys = [], med = [], spr = [];
    bins.forEach(function (b) {
      xs.push(nsToS(b.Time));
      ys.push(b.Counts[g]);
      med.push(b.Expected ? b.Expected[g] : null);
      spr.push(b.Spread ? b.Spread[g] : (b.Expected ? 0 : null));
    });
    return { xs: xs, ys: ys, med: med, spr: spr };
  }

  function attackedDevice() {
    var v = last.view;
    if (v) for (var i = 0; i < v.devices.length; i++) if (v.devices[i].IncidentId) return v.devices[i].DeviceName;
    var inc = last.incidents || [];
    for (var j = inc.length - 1; j >= 0; j--) if (!inc[j].Suppressed) return inc[j].Devices[0];
    return null;
  }

  // ---------- overview ----------
  function overviewSkeleton() {
    app.textContent = "";
    app.appendChild(el("h2", null, "Devices"));
    var t = el("table", { id: "devices" });
    var h = el("tr");
    ["device", "state", "now (projected to the bin)", "expected band", "last day", "incident"].forEach(function (c, i) {
      h.appendChild(el("th", i === 2 || i === 3 ? { class: "num" } : null, c));
    });
    t.appendChild(h);
    app.appendChild(t);
    app.appendChild(el("h2", null, "Open and recent incidents"));
    app.appendChild(el("table", { id: "incidents" }));
    app.appendChild(el("h2", null, "Input health"));
    app.appendChild(el("div", { id: "health" }));
  }

  function renderDevices(v) {
    var t = document.getElementById("devices");
    var rows = {};
    Array.prototype.forEach.call(t.querySelectorAll("tr.device"), function (r) { rows[r.getAttribute("data-device")] = r; });
    v.devices.forEach(function (d) {
      var tr = rows[d.DeviceName];
      if (!tr) {
        tr = el("tr", { class: "device", "data-device": d.DeviceName });
        var a = el("td"); a.appendChild(el("a", { href: "/device/" + encodeURIComponent(d.DeviceName) }, d.DeviceName));
        tr.appendChild(a);
        for (var i = 0; i < 3; i++) tr.appendChild(el("td", i ? { class: "num" } : { class: "state" }));
        tr.cells[2].className = "num";
        tr.appendChild(el("td", { class: "spark" }));
        tr.appendChild(el("td"));
        t.appendChild(tr);
      }
      delete rows[d.DeviceName];
      var cache = sparkCache[d.DeviceName];
      var st = stateOf(d, cache && cache.series);
      var sc = tr.cells[1];
      sc.textContent = st; sc.className = "state " + stateClass(st);
      var g = mainGroup(d), name = FW.GROUPS[g];
      var rate = d.Counts[g] / Math.max(d.Elapsed || 0, 0.05);
      tr.cells[2].textContent = name + " " + FW.fmtNum(rate);
      if (d.Expected) {
        var m = d.Expected[g], s = d.Spread ? d.Spread[g] : 0;
        tr.cells[3].textContent = FW.fmtNum(Math.max(0, m - FW.BAND_SPREADS * s)) + " – " + FW.fmtNum(m + FW.BAND_SPREADS * s);
      } else tr.cells[3].textContent = "no baseline yet";
      tr.cells[5].textContent = d.IncidentId || "";
      drawSpark(tr.cells[4], d, g);
    });
    for (var k in rows) rows[k].remove();
  }

  function drawSpark(cell, d, g) {
    var c = sparkCache[d.DeviceName];
    if (!c || !c.series) return;
    var bins = c.series.bins;
    if (!bins.length) { cell.textContent = "no sealed bin yet"; return; }
    var col = seriesColumns(bins, g);
    var hi = col.med.map(function (m, i) { return m === null ? null : m + FW.BAND_SPREADS * col.spr[i]; });
    var lo = col.med.map(function (m, i) { return m === null ? null : Math.max(0, m - FW.BAND_SPREADS * col.spr[i]); });
    if (cell._u && cell._g === g && cell._n === bins.length && cell._sealed === c.sealed) return;
    if (cell._u) cell._u.destroy();
    cell.textContent = "";
    cell._u = FW.sparkline(cell, col.xs, col.ys, lo, hi, 160, 34);
    cell._g = g; cell._n = bins.length; cell._sealed = c.sealed;
  }

  // Series of the last day of every device, fetched again once a bin was sealed.
  function refreshSparks(v) {
    var until = secs(v.newest_event);
    if (until === null) return Promise.resolve();
    var since = new Date((until - DAY) * 1000).toISOString().replace(/\.\d+Z$/, "Z");
    return Promise.all(v.devices.map(function (d) {
      var c = sparkCache[d.DeviceName];
      if (c && c.sealed === v.bins_sealed) return null;
      return getJSON("/api/devices/" + encodeURIComponent(d.DeviceName) + "/series?since=" + since)
        .then(function (s) { sparkCache[d.DeviceName] = { sealed: v.bins_sealed, series: s }; })
        .catch(function () {});
    }));
  }

  function incidentRow(inc, open, sizes) {
    var tr = el("tr", { class: "incident" + (inc.Suppressed ? " suppressed" : ""), "data-id": inc.IncidentId });
    var v = el("td"); v.appendChild(el("strong", null, inc.Vector));
    if (open) { v.appendChild(el("br")); v.appendChild(el("span", { class: "badge state-attack" }, "open")); }
    if (inc.Suppressed) { v.appendChild(el("br")); v.appendChild(el("span", { class: "badge state-suppressed" }, "suppressed")); v.appendChild(el("div", { class: "muted" }, inc.SuppressionReason || "")); }
    tr.appendChild(v);
    tr.appendChild(el("td", null, inc.AttackConfidence));
    var sv = el("td"); sv.appendChild(el("span", { class: "badge sev-" + inc.Severity }, inc.Severity)); tr.appendChild(sv);
    var dv = el("td");
    inc.Devices.forEach(function (d, i) {
      if (i) dv.appendChild(document.createTextNode(", "));
      dv.appendChild(el("a", { href: "/device/" + encodeURIComponent(d) }, d));
    });
    tr.appendChild(dv);
    tr.appendChild(FW.incidentTimes({
      start: secs(inc.Start), end: inc.End ? secs(inc.End) : null, ongoing: "ongoing",
      campaign: inc.CampaignId, campaignSize: sizes[inc.CampaignId],
      pulses: (inc.Pulses || []).map(function (p) { return [secs(p.Start), secs(p.End), p.PeakRequestCount]; }),
    }));
    var pk = el("td", { class: "num" }, FW.fmtNum(inc.Peak.RequestCount));
    pk.appendChild(el("div", { class: "muted" }, FW.fmtTime(secs(inc.Peak.TimeGenerated))));
    tr.appendChild(pk);
    var ts = el("td");
    (inc.TopSources || []).slice(0, 4).forEach(function (t) { ts.appendChild(el("div", null, t.IP + " (" + FW.fmtNum(t.Count) + ")")); });
    tr.appendChild(ts);
    var rs = el("td"), ul = el("ul", { class: "reasons" });
    (last.reasons[inc.IncidentId] || []).forEach(function (r) { ul.appendChild(el("li", null, r)); });
    rs.appendChild(ul);
    tr.appendChild(rs);
    return tr;
  }

  function renderIncidents(list, openIds, target) {
    var t = target || document.getElementById("incidents");
    t.textContent = "";
    var h = el("tr");
    ["vector", "confidence", "severity", "devices", "start – end (UTC)", "peak", "top sources", "reasons (peak bin)"].forEach(function (c, i) {
      h.appendChild(el("th", i === 5 ? { class: "num" } : null, c));
    });
    t.appendChild(h);
    var open = {}; openIds.forEach(function (o) { open[o[1]] = true; });
    // Open first, then the most recent.
    var sorted = list.slice().sort(function (a, b) {
      var oa = open[a.IncidentId] ? 1 : 0, ob = open[b.IncidentId] ? 1 : 0;
      return ob - oa || Date.parse(b.Start) - Date.parse(a.Start);
    }).slice(0, 50);
    if (!sorted.length) {
      var r = el("tr"); r.appendChild(el("td", { colspan: "8", class: "muted" }, "No incident yet.")); t.appendChild(r);
    }
    var sizes = FW.campaignSizes(list, function (i) { return i.CampaignId; });
    sorted.forEach(function (inc) { t.appendChild(incidentRow(inc, open[inc.IncidentId], sizes)); });
  }

  function renderHealth(v) {
    var box = document.getElementById("health");
    box.textContent = "";
    var lag = (secs(v.newest_event) !== null && secs(v.watermark) !== null) ? secs(v.newest_event) - secs(v.watermark) : null;
    box.appendChild(el("p", { class: "muted" },
      "Newest event " + (v.newest_event || "–") + " · watermark " + (v.watermark || "–") +
      (lag !== null ? " (bins close " + Math.round(lag) + " s of event time behind the newest event)" : "") +
      " · engine queue " + v.queue_depth + " · " + FW.fmtNum(v.events) + " events · " + FW.fmtNum(v.bins_sealed) + " bins sealed"));
    var t = el("table", { id: "inputs" }), h = el("tr");
    ["input", "records", "events", "skipped", "late", "newest event", "lag behind newest (s)", "position"].forEach(function (c, i) {
      h.appendChild(el("th", i > 0 && i < 5 || i === 6 ? { class: "num" } : null, c));
    });
    t.appendChild(h);
    var newest = secs(v.newest_event);
    v.inputs.forEach(function (i) {
      var tr = el("tr", { class: "input" });
      var skipped = 0, why = [];
      for (var k in i.skipped) { skipped += i.skipped[k]; why.push(k + " " + i.skipped[k]); }
      [i.name, FW.fmtNum(i.records), FW.fmtNum(i.events), FW.fmtNum(skipped) + (why.length ? " (" + why.join(", ") + ")" : ""),
        FW.fmtNum(i.late), i.newest || "–", i.newest && newest !== null ? FW.fmtNum(newest - secs(i.newest)) : "–", i.position || ""]
        .forEach(function (x, j) { tr.appendChild(el("td", j > 0 && j < 5 || j === 6 ? { class: "num" } : null, x)); });
      t.appendChild(tr);
    });
    if (!v.inputs.length) { var r = el("tr"); r.appendChild(el("td", { colspan: "8", class: "muted" }, "No input yet.")); t.appendChild(r); }
    box.appendChild(t);
  }

  function refreshIncidents() {
    return getJSON("/api/incidents").then(function (r) {
      last.incidents = r.incidents; last.reasons = r.reasons || {};
      return r;
    });
  }

  // ---------- device page ----------
  function deviceSkeleton() {
    app.textContent = "";
    app.appendChild(el("p", null)).appendChild(el("a", { href: "/" }, "← all devices"));
    app.appendChild(el("h2", { id: "device-title" }, deviceName));
    app.appendChild(el("div", { id: "device-now", class: "muted" }));
    var legend = el("p", { class: "muted" }, "Drag to zoom, double-click to zoom out. Band: baseline median ± " + FW.BAND_SPREADS + " spreads.");
    var k1 = el("span", { class: "legend-key" }); k1.style.background = FW.cssVar("--c-alert");
    legend.appendChild(k1); legend.appendChild(document.createTextNode("alert bin"));
    var k2 = el("span", { class: "legend-key" }); k2.style.background = FW.cssVar("--c-supp");
    legend.appendChild(k2); legend.appendChild(document.createTextNode("suppressed alert bin"));
    app.appendChild(legend);
    app.appendChild(el("div", { id: "device-charts" }));
    app.appendChild(el("h3", null, "Suppressed bins"));
    app.appendChild(el("ul", { id: "device-suppressed", class: "reasons" }));
    app.appendChild(el("h3", null, "Incidents of this device"));
    app.appendChild(el("table", { id: "incidents" }));
  }

  function renderDevice(series, suppressedAlerts) {
    var box = document.getElementById("device-charts");
    deviceCharts.forEach(function (u) { u.destroy(); });
    deviceCharts = [];
    box.textContent = "";
    var bins = series.bins;
    if (!bins.length) { box.appendChild(el("p", { class: "muted" }, "No sealed bin yet.")); return; }
    var step = Math.max(1, nsToS(bins.length > 1 ? bins[1].Time - bins[0].Time : 300e9));
    var marks = [];
    bins.forEach(function (b, i) { if (b.Alert) marks.push({ i: i, kind: b.Suppressed ? "suppressed" : "alert" }); });
    dash.marks = marks.length;
    var w = Math.max(320, Math.min(app.clientWidth, 1232) - 8);
    FW.GROUPS.forEach(function (g, gi) {
      if (!bins.some(function (b) { return b.Counts[gi] > 0; })) return;
      var col = seriesColumns(bins, gi);
      box.appendChild(el("div", { class: "chart-title" }, FW.GROUP_LABELS[g]));
      var c = el("div", { class: "chart" }); box.appendChild(c);
      deviceCharts.push(FW.vectorChart(c, { xs: col.xs, counts: col.ys, median: col.med, spread: col.spr, marks: marks, step: step, width: w, height: 210, syncKey: "dev" }));
    });
    var xs = bins.map(function (b) { return nsToS(b.Time); });
    box.appendChild(el("div", { class: "chart-title" }, "Distinct sources"));
    var c2 = el("div", { class: "chart" }); box.appendChild(c2);
    deviceCharts.push(FW.sourcesChart(c2, { xs: xs, distinct: bins.map(function (b) { return b.DistinctSources; }), fresh: bins.map(function () { return null; }), marks: marks, step: step, width: w, height: 140, syncKey: "dev" }));
    var ul = document.getElementById("device-suppressed");
    ul.textContent = "";
    var items = suppressedAlerts.map(function (a) { return [Math.round((secs(a.TimeGenerated) - xs[0]) / step), a.SuppressionReason || "suppressed"]; });
    FW.runs(items).forEach(function (r) {
      ul.appendChild(el("li", null, FW.fmtTime(xs[0] + r[0] * step) + " – " + FW.fmtTime(xs[0] + (r[1] + 1) * step) + ": " + r[2]));
    });
    if (!items.length) ul.appendChild(el("li", { class: "muted" }, "none"));
  }

  function refreshDevice(v) {
    var d = v.devices.filter(function (x) { return x.DeviceName === deviceName; })[0];
    var now = document.getElementById("device-now");
    if (d) {
      var parts = FW.GROUPS.map(function (g, gi) {
        var rate = d.Counts[gi] / Math.max(d.Elapsed || 0, 0.05);
        return g + " " + FW.fmtNum(rate) + (d.Expected ? " (expected " + FW.fmtNum(d.Expected[gi]) + ")" : "");
      });
      now.textContent = "Open bin " + FW.fmtTime(d.BinStart ? nsToS(d.BinStart) : null) + ", projected to the whole bin: " + parts.join(" · ") + (d.IncidentId ? " · under attack: " + d.IncidentId : "");
    }
    if (v.bins_sealed === last.sealed) return Promise.resolve();
    return Promise.all([
      getJSON("/api/devices/" + encodeURIComponent(deviceName) + "/series"),
      getJSON("/api/alerts?state=suppressed&stage=bin&device=" + encodeURIComponent(deviceName)),
      refreshIncidents(),
    ]).then(function (r) {
      renderDevice(r[0], r[1].alerts);
      renderIncidents(last.incidents.filter(function (i) { return i.Devices.indexOf(deviceName) >= 0; }), v.open);
    });
  }

  // ---------- live ----------
  function onView(v) {
    last.view = v;
    var p;
    if (deviceName) {
      p = refreshDevice(v);
    } else {
      renderHealth(v);
      var sealedChanged = v.bins_sealed !== last.sealed;
      p = Promise.all([sealedChanged ? refreshSparks(v) : null, sealedChanged ? refreshIncidents() : null]).then(function () {
        renderDevices(v);
        if (sealedChanged) renderIncidents(last.incidents || [], v.open);
      });
    }
    return p.then(function () {
      last.sealed = v.bins_sealed;
      document.getElementById("clock").textContent = "event time " + (v.newest_event || "–");
      dash.updates++;
      dash.ready = true;
    });
  }

  if (deviceName) deviceSkeleton(); else overviewSkeleton();
  var queue = Promise.resolve();
  var es = new EventSource("/api/events");
  es.addEventListener("view", function (e) {
    var v = JSON.parse(e.data);
    queue = queue.then(function () { return onView(v); }).catch(function (err) {
      document.getElementById("live-text").textContent = "error: " + err.message;
    });
  });
  es.onopen = function () { document.getElementById("live").className = "live-dot on"; document.getElementById("live-text").textContent = "live"; };
  es.onerror = function () { document.getElementById("live").className = "live-dot"; document.getElementById("live-text").textContent = "reconnecting…"; };
  window.addEventListener("resize", function () {
    var w = Math.max(320, Math.min(app.clientWidth, 1232) - 8);
    deviceCharts.forEach(function (u) { u.setSize({ width: w, height: u.height }); });
  });
})();
