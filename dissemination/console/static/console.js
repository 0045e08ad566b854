// The console's own script: the idle-session warning, the live indicator of server-sent
// event streams, and one polite status region for changing counts. Pages work without it.
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // Announce a short text in the page's one polite live region.
  window.consoleAnnounce = function (text) {
    var region = document.getElementById("live-status");
    if (region && region.textContent !== text) { region.textContent = text; }
  };

  function idleWarning() {
    var body = document.body;
    if (!body.hasAttribute("data-signed-in")) { return; }
    var idle = parseInt(body.getAttribute("data-idle-seconds"), 10) * 1000;
    var dialog = document.getElementById("timeout-warning");
    if (!idle || !dialog) { return; }
    var warnBefore = Math.min(120000, idle / 2);
    var warnTimer = null, endTimer = null, tick = null, deadline = 0;

    function left() {
      var seconds = Math.max(0, Math.round((deadline - Date.now()) / 1000));
      document.getElementById("timeout-left").textContent =
        seconds >= 60 ? Math.ceil(seconds / 60) + " minutes" : seconds + " seconds";
    }
    function restart() {
      clearTimeout(warnTimer); clearTimeout(endTimer); clearInterval(tick);
      deadline = Date.now() + idle;
      warnTimer = setTimeout(function () {
        left();
        tick = setInterval(left, 1000);
        if (!dialog.open) { dialog.showModal(); }
      }, idle - warnBefore);
      endTimer = setTimeout(function () {
        window.location.assign("/console/sign-in?expired=1&next=" +
          encodeURIComponent(window.location.pathname + window.location.search));
      }, idle);
    }
    document.getElementById("stay-signed-in").addEventListener("click", function () {
      fetch("/console/session/keep-alive", {
        method: "POST", credentials: "same-origin", headers: {"X-CSRF-Token": csrfToken()}
      }).then(function (response) {
        if (response.ok) { dialog.close(); clearInterval(tick); restart(); }
        else { window.location.assign("/console/sign-in?expired=1"); }
      });
    });
    // Any request of the page's own refreshes the session on the server, except a live
    // part refreshing itself ([data-live-refresh]): that is no sign of a person.
    document.body.addEventListener("htmx:afterRequest", function (event) {
      var elt = event.detail && event.detail.elt;
      if (elt && elt.closest && elt.closest("[data-live-refresh]")) { return; }
      restart();
    });
    restart();
  }

  function liveIndicators() {
    document.body.addEventListener("htmx:sseOpen", function (event) {
      var holder = event.target.closest("[data-live]");
      if (holder) { holder.setAttribute("data-live", "open"); }
      var label = document.querySelector("[data-live-label]");
      if (label) { label.textContent = "Live"; }
    });
    document.body.addEventListener("htmx:sseError", function (event) {
      var holder = event.target.closest("[data-live]");
      if (holder) { holder.setAttribute("data-live", "closed"); }
      var label = document.querySelector("[data-live-label]");
      if (label) { label.textContent = "Not live: reconnecting"; }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    idleWarning();
    liveIndicators();
    var summary = document.getElementById("error-summary");
    if (summary) { summary.focus(); }
  });
})();
