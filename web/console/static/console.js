// RadGround console: confirmation dialogs and the live refresh. Plain JavaScript, no build step.
(function () {
  "use strict";

  // Confirmation dialogs: a button with data-opens="ID" opens <dialog id=ID> as a modal
  // (keyboard focus moves into it, Escape closes it); data-closes closes it; focus returns
  // to the button that opened it.
  var opener = null;
  document.addEventListener("click", function (event) {
    var open = event.target.closest("[data-opens]");
    if (open) {
      var dialog = document.getElementById(open.getAttribute("data-opens"));
      if (dialog && !dialog.open) {
        opener = open;
        dialog.showModal();
      }
      return;
    }
    if (event.target.closest("[data-closes]")) {
      event.target.closest("dialog").close();
    }
  });
  document.addEventListener("close", function (event) {
    if (event.target.tagName === "DIALOG" && opener && document.contains(opener)) {
      opener.focus();
    }
  }, true);

  // Live refresh: poll the change stamp (small JSON); when it moved, fetch this page again and
  // swap its [data-live] regions in place. Every 2 s while something is running, every 10 s
  // when idle; a job page stops once its job and deliveries are settled. Regions holding an
  // open dialog are left alone; focus stays on the element it was on.
  var main = document.querySelector("main[data-live-stamp]");
  if (!main) { return; }
  var stamp = main.getAttribute("data-live-stamp");
  var url = main.getAttribute("data-live-url");
  var untilDone = main.getAttribute("data-live-mode") === "until-done";
  var running = main.getAttribute("data-running") === "true";
  var BUSY_MS = 2000, IDLE_MS = 10000;

  function schedule() {
    if (untilDone && !running) { return; }
    window.setTimeout(tick, running ? BUSY_MS : IDLE_MS);
  }

  function swap(fresh) {
    var focused = document.activeElement;
    var focusedId = focused && focused.id;
    document.querySelectorAll("[data-live]").forEach(function (region) {
      if (region.querySelector("dialog[open]")) { return; }
      var replacement = fresh.getElementById(region.id);
      if (!replacement) { return; }
      region.replaceWith(document.importNode(replacement, true));
    });
    if (focusedId && !document.contains(focused)) {
      var again = document.getElementById(focusedId);
      if (again) { again.focus(); }
    }
    var freshMain = fresh.querySelector("main");
    if (freshMain) {
      running = freshMain.getAttribute("data-running") === "true";
      main.setAttribute("data-running", running ? "true" : "false");
    }
  }

  function tick() {
    if (document.hidden) { schedule(); return; }
    fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.status === 401) { return null; }  // signed out: stop
        if (!response.ok) { throw new Error(String(response.status)); }
        return response.json();
      })
      .then(function (state) {
        if (state === null) { return; }
        if (!untilDone) { running = state.running > 0; }
        if (state.stamp === stamp) { schedule(); return; }
        return fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
          .then(function (response) { return response.ok ? response.text() : null; })
          .then(function (html) {
            if (html !== null) {
              swap(new DOMParser().parseFromString(html, "text/html"));
              stamp = state.stamp;
            }
            schedule();
          });
      })
      .catch(function () { schedule(); });
  }

  schedule();
})();
