// floodwatch charts: shared by the HTML report and the serve dashboard. Plain script on top
// of uPlot; exposes one global, FW.
"use strict";
var FW = (function () {
  var GROUPS = ["web", "syn", "udp", "icmp"];
  var GROUP_LABELS = {
    web: "Web connections (HTTP/S ports)",
    syn: "SYN and failed connections",
    udp: "UDP",
    icmp: "ICMP",
  };
  // The band drawn around the baseline median: this many spreads either side.
  var BAND_SPREADS = 3;

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function pad(n) { return n < 10 ? "0" + n : "" + n; }

  // Unix seconds as "YYYY-MM-DD HH:MM" UTC.
  function fmtTime(s) {
    if (s === null || s === undefined) return "";
    var d = new Date(s * 1000);
    return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) +
      " " + pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes());
  }

  function fmtNum(n) {
    if (n === null || n === undefined) return "–";
    return Math.round(n).toLocaleString("en-US");
  }

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) {
      if (k === "class") e.className = attrs[k]; else e.setAttribute(k, attrs[k]);
    }
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }

  function utc(ts) { return uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); }

  // Shades the columns of alert bins (and, in another colour, suppressed ones) behind the
  // series. marks: [{i: point index, kind: "alert" | "suppressed"}]; step: seconds a point.
  function marksPlugin(marks, step) {
    return {
      hooks: {
        drawClear: [function (u) {
          if (!marks || !marks.length) return;
          var ctx = u.ctx, xs = u.data[0];
          var top = u.bbox.top, h = u.bbox.height;
          ctx.save();
          for (var j = 0; j < marks.length; j++) {
            var m = marks[j], t = xs[m.i];
            if (t === undefined) continue;
            var x0 = u.valToPos(t, "x", true), x1 = u.valToPos(t + step, "x", true);
            if (x1 < u.bbox.left || x0 > u.bbox.left + u.bbox.width) continue;
            ctx.fillStyle = m.kind === "suppressed" ? cssVar("--c-supp") : cssVar("--c-alert");
            ctx.fillRect(x0, top, Math.max(x1 - x0, 2), h);
          }
          ctx.restore();
        }],
      },
    };
  }

  function baseOpts(width, height, syncKey) {
    return {
      width: width, height: height, tzDate: utc,
      cursor: { sync: syncKey ? { key: syncKey } : undefined, drag: { x: true, y: false } },
      scales: { x: { time: true } },
      axes: [
        { stroke: cssVar("--muted"), grid: { stroke: cssVar("--rule"), width: 1 }, ticks: { stroke: cssVar("--rule") } },
        { stroke: cssVar("--muted"), grid: { stroke: cssVar("--rule"), width: 1 }, ticks: { stroke: cssVar("--rule") }, size: 60 },
      ],
    };
  }

  // One vector group's connections against its baseline band. o: {xs, counts, median,
  // spread, marks, step, width, height, syncKey}
  function vectorChart(target, o) {
    var n = o.xs.length, hi = new Array(n), lo = new Array(n);
    for (var i = 0; i < n; i++) {
      var m = o.median[i], s = o.spread[i];
      if (m === null || m === undefined) { hi[i] = null; lo[i] = null; continue; }
      hi[i] = m + BAND_SPREADS * s;
      lo[i] = Math.max(0, m - BAND_SPREADS * s);
    }
    var opts = baseOpts(o.width, o.height || 200, o.syncKey);
    opts.series = [
      { value: function (u, v) { return fmtTime(v); } },
      { label: "connections", stroke: cssVar("--c-line"), width: 1.5, value: function (u, v) { return fmtNum(v); } },
      { label: "band top", stroke: "transparent", points: { show: false }, value: function (u, v) { return fmtNum(v); } },
      { label: "band bottom", stroke: "transparent", points: { show: false }, value: function (u, v) { return fmtNum(v); } },
      { label: "baseline median", stroke: cssVar("--c-base"), dash: [4, 4], width: 1, points: { show: false }, value: function (u, v) { return fmtNum(v); } },
    ];
    opts.bands = [{ series: [2, 3], fill: cssVar("--c-band") }];
    opts.plugins = [marksPlugin(o.marks, o.step)];
    opts.scales.y = { range: function (u, min, max) { return [0, Math.max(1, max * 1.05)]; } };
    return new uPlot(opts, [o.xs, o.counts, hi, lo, o.median], target);
  }

  // Distinct and new sources. o: {xs, distinct, fresh, marks, step, width, height, syncKey}
  function sourcesChart(target, o) {
    var opts = baseOpts(o.width, o.height || 150, o.syncKey);
    opts.series = [
      { value: function (u, v) { return fmtTime(v); } },
      { label: "distinct sources", stroke: cssVar("--c-distinct"), width: 1.5, value: function (u, v) { return fmtNum(v); } },
      { label: "new sources", stroke: cssVar("--c-new"), width: 1.5, value: function (u, v) { return fmtNum(v); } },
    ];
    opts.plugins = [marksPlugin(o.marks, o.step)];
    opts.scales.y = { range: function (u, min, max) { return [0, Math.max(1, max * 1.05)]; } };
    return new uPlot(opts, [o.xs, o.distinct, o.fresh], target);
  }

  // A small line without axes or legend: ys against the band [lo, hi] (either may be null).
  function sparkline(target, xs, ys, lo, hi, width, height) {
    var opts = {
      width: width || 160, height: height || 36, tzDate: utc,
      legend: { show: false }, cursor: { show: false },
      scales: { x: { time: true }, y: { range: function (u, min, max) { return [0, Math.max(1, max * 1.1)]; } } },
      axes: [{ show: false }, { show: false }],
      series: [{}, { stroke: cssVar("--c-line"), width: 1, points: { show: false } },
        { stroke: "transparent", points: { show: false } }, { stroke: "transparent", points: { show: false } }],
      bands: [{ series: [2, 3], fill: cssVar("--c-band") }],
    };
    return new uPlot(opts, [xs, ys, hi, lo], target);
  }

  // Consecutive marked points with the same reason as [first index, last index, reason].
  function runs(items) {
    var out = [];
    for (var j = 0; j < items.length; j++) {
      var i = items[j][0], r = items[j][1], last = out[out.length - 1];
      if (last && last[1] === i - 1 && last[2] === r) last[1] = i; else out.push([i, i, r]);
    }
    return out;
  }

  // An incident's time cell: its span, then its campaign (with how many of the listed
  // incidents share it, so a multi-day campaign reads as one) and, for a pulse flood, each
  // pulse. Times are Unix seconds; `pulses` is [[start, end, peak connections per bin], ...].
  function incidentTimes(o) {
    var td = el("td", null, fmtTime(o.start) + " – " + (o.end ? fmtTime(o.end) : o.ongoing) +
      (o.bins ? " (" + o.bins + " bins)" : ""));
    if (o.campaign) {
      var c = el("div", { class: "muted campaign" }, "campaign " + o.campaign +
        (o.campaignSize > 1 ? " (" + o.campaignSize + " incidents)" : ""));
      td.appendChild(c);
    }
    if (o.pulses && o.pulses.length > 1) {
      td.appendChild(el("div", { class: "muted" }, o.pulses.length + " pulses:"));
      var ul = el("ul", { class: "reasons pulses" });
      o.pulses.forEach(function (p) {
        ul.appendChild(el("li", null, fmtTime(p[0]) + " – " + fmtTime(p[1]).slice(11) + ", peak " + fmtNum(p[2]) + " conn/bin"));
      });
      td.appendChild(ul);
    }
    return td;
  }

  // How many incidents of `list` carry each campaign id (`campaignOf` reads an incident's).
  function campaignSizes(list, campaignOf) {
    var n = {};
    list.forEach(function (i) { var c = campaignOf(i); if (c) n[c] = (n[c] || 0) + 1; });
    return n;
  }

  return {
    incidentTimes: incidentTimes, campaignSizes: campaignSizes,
    GROUPS: GROUPS, GROUP_LABELS: GROUP_LABELS, BAND_SPREADS: BAND_SPREADS,
    fmtTime: fmtTime, fmtNum: fmtNum, el: el, cssVar: cssVar, runs: runs,
    vectorChart: vectorChart, sourcesChart: sourcesChart, sparkline: sparkline,
  };
})();
