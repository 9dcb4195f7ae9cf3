// The report page: reads the inline data, builds the summary, incident table and per-device
// charts. Every chart is kept so that the page can resize them (window, print).
"use strict";
(function () {
  var D = JSON.parse(document.getElementById("fw-data").textContent);
  var el = FW.el, charts = [];
  var root = document.getElementById("report");
  root.textContent = "";

  document.getElementById("title").textContent = D.title || "floodwatch report";
  var s = D.summary;
  document.getElementById("subtitle").textContent =
    (s.first_event ? s.first_event + " to " + s.last_event + " · " : "") +
    s.devices + " device(s) · " + D.incidents.length + " incident(s) · written " + D.generated;

  function kvTable(rows) {
    var t = el("table", { class: "kv" });
    rows.forEach(function (r) {
      var tr = el("tr");
      tr.appendChild(el("td", null, r[0]));
      var td = el("td", r[2] ? { class: "num" } : null, r[1]);
      tr.appendChild(td);
      t.appendChild(tr);
    });
    return t;
  }

  // Summary.
  root.appendChild(el("h2", { id: "summary" }, "Summary"));
  var grid = el("div", { class: "grid" });
  root.appendChild(grid);
  var p1 = el("div", { class: "panel" });
  p1.appendChild(el("h3", null, "Inputs"));
  var ti = el("table");
  var hr = el("tr"); hr.appendChild(el("th", null, "input")); hr.appendChild(el("th", null, "format"));
  ti.appendChild(hr);
  s.inputs.forEach(function (i) {
    var tr = el("tr"); tr.appendChild(el("td", null, i[0])); tr.appendChild(el("td", null, i[1]));
    ti.appendChild(tr);
  });
  p1.appendChild(ti);
  grid.appendChild(p1);

  var p2 = el("div", { class: "panel" });
  p2.appendChild(el("h3", null, "Records"));
  var rec = [
    ["read", FW.fmtNum(s.records_read), true],
    ["used (events counted)", FW.fmtNum(s.events_used), true],
    ["exact duplicates dropped", FW.fmtNum(s.duplicates), true],
    ["bytes read", (s.bytes_read / 1e6).toFixed(1) + " MB", true],
  ];
  if (!s.skipped.length) rec.push(["skipped", "none", true]);
  s.skipped.forEach(function (k) { rec.push(["skipped: " + k[0], FW.fmtNum(k[1]), true]); });
  rec.push(["devices", FW.fmtNum(s.devices), true]);
  rec.push(["first event", s.first_event || "–"]);
  rec.push(["last event", s.last_event || "–"]);
  p2.appendChild(kvTable(rec));
  if (s.skip_examples.length) {
    p2.appendChild(el("div", { class: "chart-title" }, "First skipped records"));
    var ul = el("ul", { class: "reasons" });
    s.skip_examples.forEach(function (x) { var li = el("li"); li.appendChild(el("code", null, x)); ul.appendChild(li); });
    p2.appendChild(ul);
  }
  grid.appendChild(p2);

  var p3 = el("div", { class: "panel settings" });
  p3.appendChild(el("h3", null, "Settings used"));
  p3.appendChild(kvTable(s.settings.map(function (kv) { return [kv[0], kv[1]]; })));
  root.appendChild(p3);

  // Incidents.
  root.appendChild(el("h2", { id: "incidents" }, "Incidents (" + D.incidents.length + ")"));
  if (!D.incidents.length) {
    root.appendChild(el("p", { class: "muted" }, "No incident: no bin rose above its device's baseline by the detector's tests."));
  } else {
    var tbl = el("table", { id: "incident-table" });
    var h = el("tr");
    ["vector", "confidence", "severity", "devices", "start – end (UTC)", "peak", "top sources", "reasons (peak bin)"].forEach(function (c, i) {
      h.appendChild(el("th", i === 5 ? { class: "num" } : null, c));
    });
    tbl.appendChild(h);
    var sizes = FW.campaignSizes(D.incidents, function (i) { return i.campaign; });
    D.incidents.forEach(function (inc) {
      var tr = el("tr", { class: "incident" + (inc.suppressed ? " suppressed" : ""), "data-id": inc.id });
      var v = el("td"); v.appendChild(el("strong", null, inc.vector));
      if (inc.suppressed) {
        v.appendChild(el("br"));
        v.appendChild(el("span", { class: "badge state-suppressed" }, "suppressed"));
        v.appendChild(el("div", { class: "muted" }, inc.suppression_reason || ""));
      }
      tr.appendChild(v);
      tr.appendChild(el("td", null, inc.confidence));
      var sv = el("td"); sv.appendChild(el("span", { class: "badge sev-" + inc.severity }, inc.severity)); tr.appendChild(sv);
      var dv = el("td");
      inc.devices.forEach(function (d, i) {
        if (i) dv.appendChild(document.createTextNode(", "));
        dv.appendChild(el("a", { href: "#dev-" + encodeURIComponent(d) }, d));
      });
      tr.appendChild(dv);
      tr.appendChild(FW.incidentTimes({
        start: inc.start, end: inc.end, ongoing: "ongoing at the end of the input", bins: inc.alert_bins,
        campaign: inc.campaign, campaignSize: sizes[inc.campaign], pulses: inc.pulses,
      }));
      var pk = el("td", { class: "num" }, FW.fmtNum(inc.peak_requests));
      pk.appendChild(el("div", { class: "muted" }, FW.fmtTime(inc.peak_time)));
      tr.appendChild(pk);
      var ts = el("td");
      inc.top_sources.slice(0, 5).forEach(function (t) { ts.appendChild(el("div", null, t[0] + " (" + FW.fmtNum(t[1]) + ")")); });
      tr.appendChild(ts);
      var rs = el("td"), rl = el("ul", { class: "reasons" });
      inc.reasons.forEach(function (r) { rl.appendChild(el("li", null, r)); });
      rs.appendChild(rl);
      tr.appendChild(rs);
      tbl.appendChild(tr);
    });
    root.appendChild(tbl);
  }

  // Devices.
  root.appendChild(el("h2", { id: "devices" }, "Devices"));
  var legend = el("p", { class: "muted" });
  legend.appendChild(document.createTextNode("Each vector's connections per " + (D.width_secs / 60) + "-minute bin against its baseline band (median ± " + FW.BAND_SPREADS + " spreads, as the bin was judged)."));
  var k1 = el("span", { class: "legend-key" }); k1.style.background = FW.cssVar("--c-alert");
  legend.appendChild(k1); legend.appendChild(document.createTextNode("alert bin"));
  var k2 = el("span", { class: "legend-key" }); k2.style.background = FW.cssVar("--c-supp");
  legend.appendChild(k2); legend.appendChild(document.createTextNode("suppressed alert bin (reason listed under the device)"));
  root.appendChild(legend);
  if (D.devices.length > 1) {
    var nav = el("p", { class: "no-print" });
    D.devices.forEach(function (d, i) {
      if (i) nav.appendChild(document.createTextNode(" · "));
      nav.appendChild(el("a", { href: "#dev-" + encodeURIComponent(d.name) }, d.name + (d.alerts.length ? " (" + d.alerts.length + " alert bins)" : "")));
    });
    root.appendChild(nav);
  }

  function chartWidth() { return Math.max(320, Math.min(root.clientWidth, 1232) - 8); }

  D.devices.forEach(function (d, di) {
    var sec = el("section", { class: "device", id: "dev-" + encodeURIComponent(d.name) });
    sec.appendChild(el("h3", null, d.name));
    var n = d.distinct.length, xs = new Array(n);
    for (var i = 0; i < n; i++) xs[i] = d.t0 + i * d.step;
    sec.appendChild(el("div", { class: "muted" },
      FW.fmtNum(d.total) + " inbound connections · " + d.alerts.length + " alert bin(s), " + d.suppressed.length + " suppressed" +
      (d.per_point > 1 ? " · downsampled: each point is the largest of " + d.per_point + " bins" : "")));
    var marks = d.alerts.map(function (a) { return { i: a[0], kind: "alert" }; })
      .concat(d.suppressed.map(function (a) { return { i: a[0], kind: "suppressed" }; }));
    var key = "dev" + di;
    FW.GROUPS.forEach(function (g, gi) {
      if (!d.counts[gi].length) return;
      sec.appendChild(el("div", { class: "chart-title" }, FW.GROUP_LABELS[g]));
      var box = el("div", { class: "chart", "data-group": g });
      sec.appendChild(box);
      charts.push(FW.vectorChart(box, {
        xs: xs, counts: d.counts[gi], median: d.median[gi], spread: d.spread[gi], marks: marks,
        step: d.step, width: chartWidth(), height: 190, syncKey: key,
      }));
    });
    sec.appendChild(el("div", { class: "chart-title" }, "Sources"));
    var sb = el("div", { class: "chart", "data-group": "sources" });
    sec.appendChild(sb);
    charts.push(FW.sourcesChart(sb, {
      xs: xs, distinct: d.distinct, fresh: d.new_sources, marks: marks, step: d.step,
      width: chartWidth(), height: 140, syncKey: key,
    }));
    if (d.suppressed.length) {
      sec.appendChild(el("div", { class: "chart-title" }, "Suppressed alert bins"));
      var ul = el("ul", { class: "reasons suppressed-list" });
      FW.runs(d.suppressed).forEach(function (r) {
        ul.appendChild(el("li", null, FW.fmtTime(xs[r[0]]) + " – " + FW.fmtTime(xs[r[1]] + d.step) + ": " + r[2]));
      });
      sec.appendChild(ul);
    }
    root.appendChild(sec);
  });

  if (D.others.length) {
    root.appendChild(el("h2", { id: "other-devices" }, "Other devices (" + D.others.length + ", not charted)"));
    var ot = el("table"), oh = el("tr");
    ["device", "inbound connections", "bins", "alert bins"].forEach(function (c, i) { oh.appendChild(el("th", i ? { class: "num" } : null, c)); });
    ot.appendChild(oh);
    D.others.forEach(function (o) {
      var tr = el("tr");
      tr.appendChild(el("td", null, o.name));
      tr.appendChild(el("td", { class: "num" }, FW.fmtNum(o.total)));
      tr.appendChild(el("td", { class: "num" }, FW.fmtNum(o.bins)));
      tr.appendChild(el("td", { class: "num" }, FW.fmtNum(o.alerts)));
      ot.appendChild(tr);
    });
    root.appendChild(ot);
  }

  function resize(w) {
    charts.forEach(function (u) { u.setSize({ width: w, height: u.height }); });
  }
  var pending = null;
  window.addEventListener("resize", function () {
    clearTimeout(pending);
    pending = setTimeout(function () { resize(chartWidth()); }, 100);
  });
  // A4 portrait at 96 dpi less the margins: about 680 px of chart.
  window.addEventListener("beforeprint", function () { resize(680); });
  window.addEventListener("afterprint", function () { resize(chartWidth()); });
  window.FW_REPORT = { charts: charts, data: D };
})();
