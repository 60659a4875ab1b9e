// Live entries: rows the server renders arrive as Server-Sent Events and go on top.
(function () {
  "use strict";
  var table = document.getElementById("entries");
  if (!table || !table.dataset.stream) { return; }
  var tbody = table.tBodies[0];
  var state = document.getElementById("live-state");
  var source = new EventSource(table.dataset.stream);
  var shown = 200;
  source.addEventListener("entry", function (ev) {
    var tpl = document.createElement("template");
    tpl.innerHTML = ev.data.trim();
    var row = tpl.content.firstElementChild;
    if (!row || row.tagName !== "TR") { return; }
    var same = tbody.querySelector('tr[data-key="' + CSS.escape(row.dataset.key) + '"]');
    if (same) { return; }
    row.classList.add("new");
    tbody.insertBefore(row, tbody.firstChild);
    while (tbody.rows.length > shown) { tbody.deleteRow(-1); }
    var none = document.getElementById("no-entries");
    if (none) { none.remove(); }
  });
  source.addEventListener("logout", function () {
    source.close();
    state.textContent = "Your session has ended: log in again to see new entries.";
  });
  source.onopen = function () {
    state.textContent = "Live: new entries appear at the top as the doors report them.";
    table.dataset.live = "open";
  };
  source.onerror = function () {
    state.textContent = "Connection to the office lost: reconnecting…";
    table.dataset.live = "lost";
  };
})();
