// RadGround review page: the findings' boxes on the image (move, resize, draw; panning and
// window/level by dragging), the decisions, the model's region tasks and the sign-off (zoom and
// window/level themselves are review-viewer.js's). Plain JavaScript, no
// build step. Every change goes to the review API with the session's CSRF token and the review's
// version; then the page is fetched again and its [data-review-part] regions swapped in place,
// so what is shown is always what the server holds.
(function () {
  "use strict";

  var root = document.getElementById("review");
  if (!root) { return; }
  var api = root.getAttribute("data-api");
  var csrf = root.getAttribute("data-csrf");
  var editable = root.getAttribute("data-editable") === "true";
  var imageUid = root.getAttribute("data-image");
  var frame = parseInt(root.getAttribute("data-frame") || "1", 10);
  var frameCount = parseInt(root.getAttribute("data-frame-count") || "1", 10);
  var columns = parseFloat(root.getAttribute("data-columns") || "0");
  var rows = parseFloat(root.getAttribute("data-rows") || "0");
  var data = readData();
  var suggestions = [];
  var SVG = "http://www.w3.org/2000/svg";

  function readData() {
    var node = document.getElementById("review-data");
    return node ? JSON.parse(node.textContent) : { findings: [], languages: [], version: 0 };
  }

  function byUid(uid) {
    for (var i = 0; i < data.findings.length; i++) {
      if (data.findings[i].tracking_uid === uid) { return data.findings[i]; }
    }
    return null;
  }

  // ---- messages and calls ----------------------------------------------------------------
  var messageBox = document.getElementById("review-message");
  function say(text, kind) {
    messageBox.textContent = text;
    messageBox.className = "review-message " + (kind === "error" ? "error" : "notice");
    messageBox.hidden = false;
  }

  function call(method, path, body) {
    return fetch(api + path, {
      method: method,
      credentials: "same-origin",
      cache: "no-store",
      headers: { "Content-Type": "application/json", "Accept": "application/json",
                 "X-CSRF-Token": csrf },
      body: body === undefined ? undefined : JSON.stringify(body)
    }).then(function (response) {
      return response.text().then(function (text) {
        var answer = null;
        try { answer = text ? JSON.parse(text) : null; } catch (e) { answer = null; }
        if (!response.ok) {
          var detail = answer && answer.detail ? answer.detail : ("HTTP " + response.status);
          var error = new Error(detail);
          error.status = response.status;
          throw error;
        }
        return answer;
      });
    });
  }

  function refusal(error) {
    if (error.status === 409) {
      say("Not done: " + error.message + ". The page now shows the review as it is.", "error");
      return refresh();
    }
    say("Not done: " + error.message, "error");
  }

  // ---- refreshing the page's parts ---------------------------------------------------------
  function refresh() {
    var focused = document.activeElement;
    var card = focused && focused.closest ? focused.closest(".finding-card") : null;
    var keep = card ? { number: card.getAttribute("data-number"),
                        action: focused.getAttribute("data-action") } : null;
    return fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html === null) { return; }
        var fresh = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-review-part]").forEach(function (part) {
          var replacement = fresh.getElementById(part.id);
          if (replacement) { part.replaceWith(document.importNode(replacement, true)); }
        });
        data = readData();
        var freshRoot = fresh.getElementById("review");
        if (freshRoot && freshRoot.getAttribute("data-editable") !== "true" && editable) {
          editable = false;
          document.querySelectorAll("#assist, .edit-tool").forEach(function (n) { n.remove(); });
          var selectTool = document.querySelector('input[name="tool"][value="select"]');
          if (selectTool) { selectTool.checked = true; }
          var selectName = document.getElementById("select-tool-name");
          if (selectName) { selectName.textContent = "Select"; }
          suggestions = [];
          var help = fresh.getElementById("viewer-help");
          var shown = document.getElementById("viewer-help");
          if (help && shown) { shown.replaceWith(document.importNode(help, true)); }
        }
        drawSuggestions();
        if (keep) {
          var again = document.querySelector('.finding-card[data-number="' + keep.number + '"] '
            + (keep.action ? '[data-action="' + keep.action + '"]' : "button"));
          if (again) { again.focus(); }
        }
      });
  }

  // ---- the viewer (review-viewer.js) -------------------------------------------------------
  var viewer = window.RadGroundViewer;
  var view = viewer.view;
  var viewport = document.getElementById("viewport");
  var stage = document.getElementById("stage");
  var centreInput = document.getElementById("window-center");
  var widthInput = document.getElementById("window-width");

  // ---- pointer work on the image: pan, window, move/resize boxes, draw ----------------------
  function tool() {
    var checked = document.querySelector('input[name="tool"]:checked');
    return checked ? checked.value : "select";
  }

  function overlay() { return document.getElementById("overlay"); }

  function imagePoint(event) {
    var svg = overlay();
    var point = svg.createSVGPoint();
    point.x = event.clientX;
    point.y = event.clientY;
    var p = point.matrixTransform(svg.getScreenCTM().inverse());
    return { x: Math.min(Math.max(p.x, 0), columns), y: Math.min(Math.max(p.y, 0), rows) };
  }

  function rectBox(rect) {
    var x = parseFloat(rect.getAttribute("x")), y = parseFloat(rect.getAttribute("y"));
    return { x_min: x, y_min: y, x_max: x + parseFloat(rect.getAttribute("width")),
             y_max: y + parseFloat(rect.getAttribute("height")) };
  }

  function setBox(group, box) {
    var rect = group.querySelector("rect.box");
    rect.setAttribute("x", box.x_min);
    rect.setAttribute("y", box.y_min);
    rect.setAttribute("width", box.x_max - box.x_min);
    rect.setAttribute("height", box.y_max - box.y_min);
    var label = group.querySelector("text");
    if (label) {
      label.setAttribute("x", box.x_min);
      var size = parseFloat(overlay().getAttribute("font-size"));
      label.setAttribute("y", Math.max(box.y_min - size * 0.35, size));
    }
    var corners = { nw: [box.x_min, box.y_min], ne: [box.x_max, box.y_min],
                    se: [box.x_max, box.y_max], sw: [box.x_min, box.y_max] };
    group.querySelectorAll("circle.handle").forEach(function (handle) {
      var c = corners[handle.getAttribute("data-corner")];
      handle.setAttribute("cx", c[0]);
      handle.setAttribute("cy", c[1]);
    });
  }

  function regionOf(box) {
    return { sop_instance_uid: imageUid, frame: frameCount > 1 ? frame : null,
             box: { x_min: round(box.x_min), y_min: round(box.y_min),
                    x_max: round(box.x_max), y_max: round(box.y_max) } };
  }

  function round(value) { return Math.round(value * 10) / 10; }

  function normalised(a, b) {
    return { x_min: Math.min(a.x, b.x), y_min: Math.min(a.y, b.y),
             x_max: Math.max(a.x, b.x), y_max: Math.max(a.y, b.y) };
  }

  // The listeners are on the viewport: a box may be started on the black around the image
  // (points are clamped to the image).
  var drag = null;
  if (stage) {
    viewport.addEventListener("pointerdown", function (event) {
      if (event.button !== 0) { return; }
      var mode = tool();
      var group = event.target.closest ? event.target.closest("g.finding-box") : null;
      var start = { cx: event.clientX, cy: event.clientY, p: imagePoint(event) };
      if (mode === "select" && editable && group) {
        selectFinding(group.getAttribute("data-uid"), false);
        var handle = event.target.closest("circle.handle");
        drag = { kind: handle ? "resize" : "move", corner: handle && handle.getAttribute("data-corner"),
                 group: group, box: rectBox(group.querySelector("rect.box")), start: start,
                 moved: false };
      } else if ((mode === "draw" || mode === "ask") && editable) {
        var rect = document.createElementNS(SVG, "rect");
        rect.setAttribute("class", mode === "ask" ? "drawing asking" : "drawing");
        overlay().appendChild(rect);
        drag = { kind: mode, rect: rect, start: start, moved: false };
      } else if (mode === "window") {
        drag = { kind: "window", start: start, centre: parseFloat(centreInput.value),
                 width: parseFloat(widthInput.value) };
      } else {
        if (group) { selectFinding(group.getAttribute("data-uid"), false); }
        drag = { kind: "pan", start: start, x: view.x, y: view.y };
      }
      viewport.setPointerCapture(event.pointerId);
      viewport.focus({ preventScroll: true });
      event.preventDefault();
    });
    viewport.addEventListener("pointermove", function (event) {
      if (!drag) { return; }
      var dx = event.clientX - drag.start.cx, dy = event.clientY - drag.start.cy;
      if (Math.abs(dx) + Math.abs(dy) > 2) { drag.moved = true; }
      if (drag.kind === "pan") {
        view.x = drag.x + dx;
        view.y = drag.y + dy;
        viewer.apply();
      } else if (drag.kind === "window") {
        if (!isFinite(drag.centre)) { return; }
        var per = viewer.range() / Math.max(viewport.clientWidth, 1);
        viewer.showWindow(drag.centre - dy * per, Math.max(1, drag.width + dx * per), false);
      } else if (drag.kind === "move" || drag.kind === "resize") {
        var p = imagePoint(event), b = drag.box, box;
        var ix = p.x - drag.start.p.x, iy = p.y - drag.start.p.y;
        if (drag.kind === "move") {
          ix = Math.min(Math.max(ix, -b.x_min), columns - b.x_max);
          iy = Math.min(Math.max(iy, -b.y_min), rows - b.y_max);
          box = { x_min: b.x_min + ix, y_min: b.y_min + iy, x_max: b.x_max + ix, y_max: b.y_max + iy };
        } else {
          var c = drag.corner;
          var fixed = { x: c.indexOf("w") >= 0 ? b.x_max : b.x_min,
                        y: c.indexOf("n") >= 0 ? b.y_max : b.y_min };
          box = normalised(fixed, p);
        }
        if (box.x_max - box.x_min >= 2 && box.y_max - box.y_min >= 2) {
          drag.current = box;
          setBox(drag.group, box);
        }
      } else if (drag.kind === "draw" || drag.kind === "ask") {
        var q = normalised(drag.start.p, imagePoint(event));
        drag.box = q;
        drag.rect.setAttribute("x", q.x_min);
        drag.rect.setAttribute("y", q.y_min);
        drag.rect.setAttribute("width", q.x_max - q.x_min);
        drag.rect.setAttribute("height", q.y_max - q.y_min);
      }
    });
    var finish = function () {
      var done = drag;
      drag = null;
      if (!done) { return; }
      if ((done.kind === "move" || done.kind === "resize") && done.moved && done.current) {
        var uid = done.group.getAttribute("data-uid");
        call("PATCH", "/findings/" + encodeURIComponent(uid),
             { version: data.version, region: regionOf(done.current) })
          .then(function () {
            return refresh().then(function () {
              say("Finding " + done.group.getAttribute("data-number") + ": box "
                + (done.kind === "move" ? "moved." : "resized."), "notice");
            });
          })
          .catch(function (error) { refusal(error); refresh(); });
      } else if (done.kind === "draw" || done.kind === "ask") {
        var box = done.box;
        if (!box || box.x_max - box.x_min < 4 || box.y_max - box.y_min < 4) {
          done.rect.remove();
          if (done.moved) { say("Draw a larger box.", "error"); }
          return;
        }
        if (done.kind === "draw") { openAdd(box, done.rect); } else { ask(box, done.rect); }
      }
    };
    viewport.addEventListener("pointerup", finish);
    viewport.addEventListener("pointercancel", finish);
  }

  function selectFinding(uid, scrollImage) {
    document.querySelectorAll(".finding-box.selected, .finding-card.selected").forEach(function (n) {
      n.classList.remove("selected");
    });
    var group = document.querySelector('g.finding-box[data-uid="' + uid + '"]');
    var card = document.querySelector('.finding-card[data-uid="' + uid + '"]');
    if (card) { card.classList.add("selected"); }
    if (!group) { return false; }
    group.classList.add("selected");
    if (scrollImage) {
      var b = rectBox(group.querySelector("rect.box"));
      view.x = viewport.clientWidth / 2 - ((b.x_min + b.x_max) / 2) * view.scale;
      view.y = viewport.clientHeight / 2 - ((b.y_min + b.y_max) / 2) * view.scale;
      viewer.apply();
    }
    return true;
  }

  // ---- decisions ---------------------------------------------------------------------------
  var opener = null;
  function openDialog(id, from) {
    var dialog = document.getElementById(id);
    opener = from || null;
    dialog.showModal();
    return dialog;
  }
  document.addEventListener("close", function (event) {
    if (event.target.tagName !== "DIALOG" || !opener) { return; }
    var card = opener.closest ? opener.closest(".finding-card") : null;
    var target = opener;
    if (!document.contains(opener) && card) {
      target = document.querySelector('.finding-card[data-number="' + card.getAttribute("data-number")
        + '"] [data-action="' + opener.getAttribute("data-action") + '"]');
    }
    if (target && document.contains(target)) { target.focus(); }
    opener = null;
  }, true);

  var current = null;  // the finding a dialog is about

  function fill(dialog, name, text) {
    dialog.querySelectorAll('[data-fill="' + name + '"]').forEach(function (n) { n.textContent = text; });
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-action]");
    if (!button) { return; }
    var card = button.closest(".finding-card");
    var uid = card.getAttribute("data-uid");
    var number = card.getAttribute("data-number");
    var action = button.getAttribute("data-action");
    if (action === "show") {
      if (!selectFinding(uid, true)) {
        var finding = byUid(uid), region = finding && finding.final.regions[0];
        var index = region ? data.images.map(function (i) { return i.sop_instance_uid; })
          .indexOf(region.sop_instance_uid) : -1;
        if (index >= 0) {
          window.location.search = "?image=" + index + "&frame=" + (region.frame || 1);
        }
      }
    } else if (action === "accept") {
      call("PATCH", "/findings/" + encodeURIComponent(uid), { version: data.version, decision: "accepted" })
        .then(function () {
          return refresh().then(function () { say("Finding " + number + " accepted.", "notice"); });
        })
        .catch(refusal);
    } else if (action === "reject") {
      current = { uid: uid, number: number };
      var dialog = document.getElementById("reject-dialog");
      dialog.querySelector("form").reset();
      fill(dialog, "number", number);
      openDialog("reject-dialog", button);
    } else if (action === "edit") {
      current = { uid: uid, number: number, finding: byUid(uid) };
      openEdit(button);
    }
  });

  function submitter(formId, handler) {
    var form = document.getElementById(formId);
    if (!form) { return; }
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var dialog = form.closest("dialog");
      handler(form).then(function (ok) {
        if (ok !== false && dialog) { dialog.close(); }
      }).catch(function (error) {
        if (dialog) { dialog.close(); }
        refusal(error);
      });
    });
  }

  submitter("reject-form", function (form) {
    var reason = form.querySelector('input[name="reason"]:checked');
    return call("PATCH", "/findings/" + encodeURIComponent(current.uid), {
      version: data.version, decision: "rejected", reject_reason: reason.value,
      reject_note: form.querySelector("#reject-note").value.trim()
    }).then(function () {
      return refresh().then(function () {
        say("Finding " + current.number + " rejected (" + reason.parentNode.textContent.trim() + ").", "notice");
      });
    });
  });

  function openEdit(button) {
    var dialog = document.getElementById("edit-dialog");
    var f = current.finding.final;
    fill(dialog, "number", current.number);
    data.languages.forEach(function (lang) {
      dialog.querySelector("#edit-label-" + cssId(lang)).value = f.label[lang] || "";
      dialog.querySelector("#edit-description-" + cssId(lang)).value = f.description[lang] || "";
    });
    dialog.querySelector("#edit-concept-meaning").value = f.concept ? f.concept.meaning : "";
    dialog.querySelector("#edit-concept-value").value = f.concept ? f.concept.value : "";
    dialog.querySelector("#edit-concept-scheme").value = f.concept ? f.concept.scheme_designator : "";
    var box = f.regions.length ? f.regions[0].box : null;
    ["x_min", "y_min", "x_max", "y_max"].forEach(function (name) {
      var input = dialog.querySelector("#edit-" + name);
      input.value = box ? String(round(box[name])) : "";
      input.disabled = !box;
    });
    openDialog("edit-dialog", button);
  }

  function cssId(lang) { return lang.replace(/[^A-Za-z0-9_-]/g, "\\$&"); }

  submitter("edit-form", function (form) {
    var f = current.finding.final, change = { version: data.version }, labels = {}, sentences = {};
    var changedLabels = false, changedSentences = false;
    data.languages.forEach(function (lang) {
      var label = form.querySelector("#edit-label-" + cssId(lang)).value.trim();
      var sentence = form.querySelector("#edit-description-" + cssId(lang)).value.trim();
      if (label !== (f.label[lang] || "")) { labels[lang] = label; changedLabels = true; }
      if (sentence !== (f.description[lang] || "")) { sentences[lang] = sentence; changedSentences = true; }
    });
    if (changedLabels) { change.label = labels; }
    if (changedSentences) { change.description = sentences; }
    var meaning = form.querySelector("#edit-concept-meaning").value.trim();
    var value = form.querySelector("#edit-concept-value").value.trim();
    var scheme = form.querySelector("#edit-concept-scheme").value.trim();
    var old = f.concept || { meaning: "", value: "", scheme_designator: "" };
    if (meaning !== old.meaning || value !== old.value || scheme !== old.scheme_designator) {
      if (!meaning || !value || !scheme) {
        say("A coded finding needs its meaning, code and scheme.", "error");
        return Promise.resolve(false);
      }
      change.concept = { meaning: meaning, value: value, scheme_designator: scheme };
    }
    if (f.regions.length) {
      var region = f.regions[0], box = {}, moved = false;
      ["x_min", "y_min", "x_max", "y_max"].forEach(function (name) {
        box[name] = parseFloat(form.querySelector("#edit-" + name).value);
        if (Math.abs(box[name] - region.box[name]) > 0.05) { moved = true; }
      });
      if (moved) {
        change.region = { sop_instance_uid: region.sop_instance_uid, frame: region.frame, box: box };
      }
    }
    if (Object.keys(change).length === 1) {
      say("Nothing changed in finding " + current.number + ".", "notice");
      return Promise.resolve(true);
    }
    return call("PATCH", "/findings/" + encodeURIComponent(current.uid), change).then(function () {
      var what = [];
      if (changedLabels) { what.push("finding"); }
      if (changedSentences) { what.push("sentence (" + Object.keys(sentences).join(", ") + ")"); }
      if (change.concept) { what.push("code"); }
      if (change.region) { what.push("box"); }
      return refresh().then(function () {
        say("Finding " + current.number + ": " + what.join(", ") + " changed.", "notice");
      });
    });
  });

  // ---- adding: drawn boxes and suggestions ---------------------------------------------------
  var pendingRect = null, pendingBox = null;
  function openAdd(box, rect) {
    var dialog = document.getElementById("add-dialog");
    dialog.querySelector("form").reset();
    pendingRect = rect;
    pendingBox = box;
    fill(dialog, "box", "left " + Math.round(box.x_min) + ", top " + Math.round(box.y_min)
      + ", right " + Math.round(box.x_max) + ", bottom " + Math.round(box.y_max) + " (pixels)");
    openDialog("add-dialog", viewport);
  }
  var addDialog = document.getElementById("add-dialog");
  if (addDialog) {
    addDialog.addEventListener("close", function () {
      if (pendingRect) { pendingRect.remove(); pendingRect = null; }
    });
  }

  submitter("add-form", function (form) {
    var labels = {}, sentences = {};
    data.languages.forEach(function (lang) {
      labels[lang] = form.querySelector("#add-label-" + cssId(lang)).value.trim();
      sentences[lang] = form.querySelector("#add-description-" + cssId(lang)).value.trim();
    });
    return call("POST", "/findings", {
      version: data.version, label: labels, description: sentences, region: regionOf(pendingBox),
      kind: form.querySelector("#add-kind").value, origin: "radiologist"
    }).then(function () {
      return refresh().then(function () {
        say("Finding added: " + labels[data.languages[0]] + ".", "notice");
      });
    });
  });

  function ask(box, rect) {
    say("Asking the model what is in the box…", "notice");
    call("POST", "/region-to-text", regionOf(box)).then(function (answer) {
      rect.remove();
      suggestions = answer.suggestions.map(function (s) { s.kind = "describe"; return s; });
      showSuggestions("What the model sees in the box", answer.suggestions.length
        ? null : "The model has nothing to say about this box.");
    }).catch(function (error) { rect.remove(); refusal(error); });
  }

  var locateForm = document.getElementById("locate-form");
  if (locateForm) {
    locateForm.addEventListener("submit", function (event) {
      event.preventDefault();
      var query = locateForm.querySelector("#locate-query").value.trim();
      var language = locateForm.querySelector("#locate-language").value;
      say("Asking the model where “" + query + "” is…", "notice");
      call("POST", "/text-to-region", { query: query, language: language }).then(function (answer) {
        suggestions = answer.suggestions.map(function (s) { s.kind = "locate"; return s; });
        showSuggestions("Where the model finds “" + query + "”", answer.suggestions.length
          ? null : "The model finds no “" + query + "” on these images.");
      }).catch(refusal);
    });
  }

  function text(map) {
    return data.languages.filter(function (l) { return map[l]; })
      .map(function (l) { return map[l]; }).join(" / ") || Object.values(map).join(" / ");
  }

  function showSuggestions(title, empty) {
    var panel = document.getElementById("suggestions");
    if (!panel) { return; }
    panel.textContent = "";
    var heading = document.createElement("h3");
    heading.textContent = title;
    panel.appendChild(heading);
    if (empty) {
      var none = document.createElement("p");
      none.textContent = empty;
      panel.appendChild(none);
      messageBox.hidden = true;
      drawSuggestions();
      return;
    }
    var list = document.createElement("ol");
    list.className = "suggestion-list";
    suggestions.forEach(function (s, index) {
      var item = document.createElement("li");
      item.className = "suggestion";
      item.setAttribute("data-suggestion", String(index));
      var name = document.createElement("strong");
      name.textContent = text(s.label);
      item.appendChild(name);
      var about = document.createElement("p");
      about.textContent = text(s.description) + (s.confidence === null ? ""
        : " (confidence " + Math.round(s.confidence * 100) + "%)")
        + (s.region.sop_instance_uid !== imageUid ? " — on another image of the study" : "");
      item.appendChild(about);
      var add = document.createElement("button");
      add.type = "button";
      add.className = "button";
      add.textContent = "Add to report";
      add.setAttribute("aria-label", "Add “" + text(s.label) + "” to the report");
      add.addEventListener("click", function () { addSuggestion(s, add); });
      item.appendChild(add);
      list.appendChild(item);
    });
    panel.appendChild(list);
    messageBox.hidden = true;
    drawSuggestions();
  }

  function drawSuggestions() {
    var svg = overlay();
    if (!svg) { return; }
    svg.querySelectorAll(".suggestion-box").forEach(function (n) { n.remove(); });
    suggestions.forEach(function (s, index) {
      if (s.region.sop_instance_uid !== imageUid || (frameCount > 1 && s.region.frame !== frame)) {
        return;
      }
      var b = s.region.box;
      var rect = document.createElementNS(SVG, "rect");
      rect.setAttribute("class", "suggestion-box");
      rect.setAttribute("x", b.x_min);
      rect.setAttribute("y", b.y_min);
      rect.setAttribute("width", b.x_max - b.x_min);
      rect.setAttribute("height", b.y_max - b.y_min);
      var title = document.createElementNS(SVG, "title");
      title.textContent = "Suggestion " + (index + 1) + ": " + text(s.label);
      rect.appendChild(title);
      svg.appendChild(rect);
    });
  }

  function addSuggestion(s, button) {
    button.disabled = true;
    call("POST", "/findings", {
      version: data.version, label: s.label, description: s.description, region: s.region,
      confidence: s.confidence, concept: s.concept, origin: "suggestion"
    }).then(function () {
      suggestions = suggestions.filter(function (other) { return other !== s; });
      var item = button.closest(".suggestion");
      if (item) { item.remove(); }
      if (!suggestions.length) {
        var panel = document.getElementById("suggestions");
        if (panel) { panel.textContent = ""; }
      }
      return refresh().then(function () {
        say("Added to the report: " + text(s.label) + ".", "notice");
      });
    }).catch(function (error) { button.disabled = false; refusal(error); });
  }

  // ---- sign-off and sending back --------------------------------------------------------------
  document.addEventListener("submit", function (event) {
    if (event.target.id !== "sign-form") { return; }
    event.preventDefault();
    var languages = Array.prototype.map.call(
      event.target.querySelectorAll('input[name="languages"]:checked'), function (box) { return box.value; });
    if (!languages.length) {
      say("Tick the languages whose text you reviewed: only those are published as verified.", "error");
      return;
    }
    call("POST", "/sign", { version: data.version, languages: languages }).then(function (answer) {
      return refresh().then(function () {
        say("Signed (sign-off " + answer.signoff + ", verified in " + languages.join(", ")
        + "). The verified outputs are being built and delivered.", "notice");
      });
    }).catch(refusal);
  });

  submitter("send-back-form", function (form) {
    return call("POST", "/send-back", {
      version: data.version, note: form.querySelector("#send-back-note").value.trim()
    }).then(function () {
      return refresh().then(function () {
        say("Sent back unsigned; your decisions are kept.", "notice");
      });
    });
  });
})();
