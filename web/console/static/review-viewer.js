// RadGround review page, the image viewer: zoom (buttons, mouse wheel, keys), pan (arrow keys;
// dragging is in review.js) and window/level (inputs, presets, W/S/A/D keys). Plain JavaScript,
// no build step. What the page's other script needs is in window.RadGroundViewer.
(function () {
  "use strict";

  var root = document.getElementById("review");
  if (!root) { return; }
  var columns = parseFloat(root.getAttribute("data-columns") || "0");
  var rows = parseFloat(root.getAttribute("data-rows") || "0");
  var messageBox = document.getElementById("review-message");
  function say(text) {
    messageBox.textContent = text;
    messageBox.className = "review-message error";
    messageBox.hidden = false;
  }

  // ---- the viewer: zoom and pan --------------------------------------------------------------
  var viewport = document.getElementById("viewport");
  var stage = document.getElementById("stage");
  var image = document.getElementById("review-image");
  var view = { scale: 1, x: 0, y: 0 };
  var zoomOutput = document.getElementById("zoom-level");

  function apply() {
    stage.style.transform = "translate(" + view.x + "px," + view.y + "px) scale(" + view.scale + ")";
    if (zoomOutput) { zoomOutput.textContent = Math.round(view.scale * 100) + "%"; }
  }

  function fit() {
    if (!viewport || !columns) { return; }
    var width = viewport.clientWidth, height = viewport.clientHeight;
    view.scale = Math.min(width / columns, height / rows);
    view.x = (width - columns * view.scale) / 2;
    view.y = (height - rows * view.scale) / 2;
    apply();
  }

  function zoomAt(factor, cx, cy) {
    var next = Math.min(Math.max(view.scale * factor, 0.02), 16);
    factor = next / view.scale;
    view.x = cx - (cx - view.x) * factor;
    view.y = cy - (cy - view.y) * factor;
    view.scale = next;
    apply();
  }

  function zoomCentre(factor) {
    zoomAt(factor, viewport.clientWidth / 2, viewport.clientHeight / 2);
  }

  if (viewport && stage) {
    stage.style.width = columns + "px";
    stage.style.height = rows + "px";
    fit();
    window.addEventListener("resize", fit);
    viewport.addEventListener("wheel", function (event) {
      event.preventDefault();
      var rect = viewport.getBoundingClientRect();
      zoomAt(event.deltaY < 0 ? 1.15 : 1 / 1.15, event.clientX - rect.left, event.clientY - rect.top);
    }, { passive: false });
    document.querySelectorAll("[data-zoom]").forEach(function (button) {
      button.addEventListener("click", function () {
        var how = button.getAttribute("data-zoom");
        if (how === "fit") { fit(); } else { zoomCentre(how === "in" ? 1.25 : 0.8); }
      });
    });
    viewport.addEventListener("keydown", function (event) {
      var step = 40, handled = true;
      switch (event.key) {
        case "+": case "=": zoomCentre(1.25); break;
        case "-": case "_": zoomCentre(0.8); break;
        case "0": fit(); break;
        case "ArrowLeft": view.x += step; apply(); break;
        case "ArrowRight": view.x -= step; apply(); break;
        case "ArrowUp": view.y += step; apply(); break;
        case "ArrowDown": view.y -= step; apply(); break;
        case "w": case "W": nudgeWindow(0, 1); break;
        case "s": case "S": nudgeWindow(0, -1); break;
        case "a": case "A": nudgeWindow(-1, 0); break;
        case "d": case "D": nudgeWindow(1, 0); break;
        default: handled = false;
      }
      if (handled) { event.preventDefault(); }
    });
  }

  // ---- window / level --------------------------------------------------------------------------
  var windowForm = document.getElementById("window-form");
  var centreInput = document.getElementById("window-center");
  var widthInput = document.getElementById("window-width");
  var presetSelect = document.getElementById("window-preset");
  var range = 4096, windowTimer = null, presets = {};

  function showWindow(centre, width, now) {
    centreInput.value = String(Math.round(centre * 10) / 10);
    widthInput.value = String(Math.max(1, Math.round(width * 10) / 10));
    window.clearTimeout(windowTimer);
    var load = function () {
      image.src = image.getAttribute("data-src") + "?center=" + encodeURIComponent(centreInput.value)
        + "&width=" + encodeURIComponent(widthInput.value);
    };
    if (now) { load(); } else { windowTimer = window.setTimeout(load, 120); }
  }

  function nudgeWindow(dw, dc) {
    if (!windowForm || centreInput.disabled) { return; }
    var step = range / 50;
    showWindow(parseFloat(centreInput.value) + dc * step,
               parseFloat(widthInput.value) + dw * step, false);
  }

  if (windowForm && image) {
    fetch(image.getAttribute("data-display"), { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (display) {
        if (!display || display.window_center === null) {
          centreInput.disabled = widthInput.disabled = presetSelect.disabled = true;
          return;
        }
        range = Math.max((display.max_value - display.min_value) || 1, 1);
        centreInput.value = String(display.window_center);
        widthInput.value = String(display.window_width);
        presets = display.presets || {};
        Object.keys(presets).forEach(function (name) {
          var option = document.createElement("option");
          option.value = name;
          option.textContent = name + " (" + presets[name][0] + " / " + presets[name][1] + ")";
          presetSelect.appendChild(option);
        });
        if (presets["Image default"]) { presetSelect.value = "Image default"; }
      });
    windowForm.addEventListener("submit", function (event) {
      event.preventDefault();
      var centre = parseFloat(centreInput.value), width = parseFloat(widthInput.value);
      if (!isFinite(centre) || !(width > 0)) {
        say("The window needs a centre and a width above 0.");
        return;
      }
      showWindow(centre, width, true);
    });
    presetSelect.addEventListener("change", function () {
      var chosen = presets[presetSelect.value];
      if (chosen) { showWindow(chosen[0], chosen[1], true); }
    });
  }


  window.RadGroundViewer = {
    view: view,
    apply: apply,
    fit: fit,
    showWindow: showWindow,
    range: function () { return range; }
  };
})();
