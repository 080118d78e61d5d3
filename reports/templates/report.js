(function () {
  "use strict";
  var payload = JSON.parse(document.getElementById("report-figures").textContent);
  var config = { displaylogo: false, responsive: true, showLink: false, showSendToCloud: false,
                 modeBarButtonsToRemove: ["sendDataToCloud"], toImageButtonOptions: { format: "png" } };
  // Draw one figure at a time, yielding between them, so the text is usable at once.
  var queue = payload.figures.slice();
  function next() {
    var f = queue.shift();
    if (!f) { document.body.setAttribute("data-figures-drawn", "1"); return; }
    var el = document.getElementById(f.id);
    if (!el) { setTimeout(next, 0); return; }
    var layout = f.layout || {};
    layout.template = payload.template;
    Plotly.newPlot(el, f.data, layout, config).then(function () {
      el.setAttribute("data-drawn", "1");
      setTimeout(next, 0);
    }, function (err) {
      console.error("figure " + f.id + " failed: " + err);
      setTimeout(next, 0);
    });
  }
  next();
  window.addEventListener("beforeprint", function () {
    document.querySelectorAll(".js-plotly-plot").forEach(function (el) { Plotly.Plots.resize(el); });
  });

  // Sortable tables: click a header to sort by that column (numbers by value, text A-Z).
  function key(td) {
    var v = td.getAttribute("data-v");
    if (v === null || v === "") { return null; }
    var n = Number(v);
    return isNaN(n) ? v.toLowerCase() : n;
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var ths = table.querySelectorAll("thead th");
    ths.forEach(function (th, idx) {
      th.querySelector("button").addEventListener("click", function () {
        var asc = th.getAttribute("aria-sort") !== "ascending";
        ths.forEach(function (o) { o.setAttribute("aria-sort", "none"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a.cells[idx]), y = key(b.cells[idx]);
          if (x === null && y === null) { return 0; }
          if (x === null) { return 1; }      // blanks last either way
          if (y === null) { return -1; }
          if (typeof x !== typeof y) { x = String(x); y = String(y); }
          var c = x < y ? -1 : x > y ? 1 : 0;
          return asc ? c : -c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
})();
