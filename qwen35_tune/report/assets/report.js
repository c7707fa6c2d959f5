// Hover read-out for the line charts: the nearest logged step of every series under the pointer.
// Each chart carries its points as JSON (script.chart-data) next to its SVG; nothing is fetched.
(function () {
  "use strict";
  function nearest(points, x) {
    var lo = 0, hi = points.length - 1;
    while (hi - lo > 1) {
      var mid = (lo + hi) >> 1;
      if (points[mid][0] < x) { lo = mid; } else { hi = mid; }
    }
    return Math.abs(points[lo][0] - x) <= Math.abs(points[hi][0] - x) ? points[lo] : points[hi];
  }
  function fmt(v) {
    var a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) { return v.toExponential(3); }
    return String(Math.round(v * 1e4) / 1e4);
  }
  function attach(figure) {
    var holder = figure.querySelector("script.chart-data");
    var svg = figure.querySelector("svg");
    var readout = figure.querySelector(".readout");
    var cursor = svg && svg.querySelector(".cursor");
    if (!holder || !svg || !readout || !cursor) { return; }
    var data = JSON.parse(holder.textContent);
    svg.addEventListener("mousemove", function (event) {
      var box = svg.getBoundingClientRect();
      var px = (event.clientX - box.left) * data.total / box.width;
      if (px < data.left || px > data.left + data.width) { return; }
      var x = data.x0 + (px - data.left) / data.width * (data.x1 - data.x0);
      var lines = [];
      var step = null;
      data.series.forEach(function (s) {
        if (!s.points.length) { return; }
        var p = nearest(s.points, x);
        step = step === null ? p[0] : step;
        lines.push(s.label + ": " + fmt(p[1]) + " (" + data.xlabel + " " + p[0] + ")");
      });
      cursor.setAttribute("x1", px);
      cursor.setAttribute("x2", px);
      cursor.setAttribute("visibility", "visible");
      readout.textContent = "";
      lines.forEach(function (text) {
        var div = document.createElement("div");
        div.textContent = text;
        readout.appendChild(div);
      });
      readout.hidden = false;
    });
    svg.addEventListener("mouseleave", function () {
      readout.hidden = true;
      cursor.setAttribute("visibility", "hidden");
    });
  }
  document.querySelectorAll("figure.chart").forEach(attach);
})();
