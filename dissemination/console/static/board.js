// The board's live part: after a row is refetched, say what changed in the page's one polite
// live region (at most once every few seconds, the latest change winning) and when the board
// was last updated; offer a refresh when alerts it does not show arrive; when the stream ends
// with the session, say that the board is not live.
(function () {
  "use strict";
  var GAP_MS = 5000;
  var pending = null, timer = null, last = 0;

  function announce(text) {
    pending = text;
    if (timer) { return; }
    var wait = Math.max(0, last + GAP_MS - Date.now());
    timer = setTimeout(function () {
      timer = null;
      last = Date.now();
      window.consoleAnnounce(pending);
    }, wait);
  }

  function rowPath(event) {
    var info = event.detail && event.detail.pathInfo;
    var path = info ? info.requestPath : "";
    var match = /^\/console\/board\/rows\/([^/?]+)/.exec(path || "");
    return match ? decodeURIComponent(match[1]) : null;
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.body.addEventListener("htmx:afterSettle", function (event) {
      var id = rowPath(event);
      if (!id) { return; }
      var row = document.getElementById("alert-" + id);
      if (row) { announce(row.getAttribute("data-summary")); }
      var updated = document.getElementById("board-updated");
      if (updated) { updated.textContent = "Updated " + new Date().toISOString().slice(11, 19) + " UTC"; }
    });
    // An alert the board does not show changed: offer to refresh (never reorder rows under
    // the reader). A filtered board cannot tell whether the alert would match: it stays quiet.
    document.body.addEventListener("htmx:sseBeforeMessage", function (event) {
      var holder = event.target;
      if (!holder || holder.id !== "board-changes") { return; }
      event.preventDefault();
      if (holder.hasAttribute("data-filtered")) { return; }
      var id = null;
      try { id = JSON.parse(event.detail.data).alertId; } catch (ignored) { return; }
      var news = document.getElementById("board-news");
      if (id && news && news.hidden && !document.getElementById("alert-" + id)) {
        news.hidden = false;
        announce("New alerts have arrived: refresh the board to see them");
      }
    });
    document.body.addEventListener("htmx:sseClose", function (event) {
      var holder = event.target.closest("[data-live]");
      if (holder) { holder.setAttribute("data-live", "closed"); }
      var label = document.querySelector("[data-live-label]");
      if (label) { label.textContent = "Not live: the session has ended"; }
    });
  });
})();
