// The edge console's few scripts: the live picture, the enrollment quality, confirmations.
// No framework, nothing fetched from elsewhere.
"use strict";

function fmt(v, d) { return v === null || v === undefined ? "-" : Number(v).toFixed(d); }

// Forms that change something for good ask first.
document.querySelectorAll("form[data-confirm]").forEach(function (f) {
  f.addEventListener("submit", function (ev) {
    if (!window.confirm(f.dataset.confirm)) { ev.preventDefault(); }
  });
});

// The live picture: ask for the next frame newer than the one shown, one at a time.
// Each answer carries its camera capture time (X-Capture-Time, epoch seconds), so
// the latency shown is camera -> this screen.
function livePicture(img, onFrame) {
  var seq = 0, shown = null;
  function next() {
    fetch("/live/frame.jpg?after=" + seq, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (r.status === 401) { window.location = "/login?next=" + encodeURIComponent(location.pathname); return null; }
        if (r.status !== 200) { return null; }
        seq = Number(r.headers.get("X-Frame-Seq"));
        var captured = Number(r.headers.get("X-Capture-Time"));
        var faces = JSON.parse(r.headers.get("X-Faces") || "[]");
        return r.blob().then(function (b) {
          var url = URL.createObjectURL(b);
          img.onload = function () {
            if (shown) { URL.revokeObjectURL(shown); }
            shown = url;
            var ms = Date.now() - captured * 1000;
            if (onFrame) { onFrame(faces, ms, seq); }
          };
          img.src = url;
        });
      })
      .catch(function () { return new Promise(function (ok) { setTimeout(ok, 1000); }); })
      .then(function () { setTimeout(next, 0); });
  }
  next();
}

function liveView() {
  var img = document.getElementById("frame");
  var lat = document.getElementById("latency");
  var tbody = document.querySelector("#faces tbody");
  livePicture(img, function (faces, ms) {
    lat.textContent = ms.toFixed(0) + " ms";
    lat.dataset.ms = ms.toFixed(1);
    tbody.innerHTML = "";
    faces.forEach(function (f) {
      var tr = document.createElement("tr");
      [String(f.track), f.name || "unknown", fmt(f.similarity, 3), fmt(f.liveness, 2), f.waiting,
       f.box.map(function (v) { return v.toFixed(0); }).join(", ")].forEach(function (t) {
        var td = document.createElement("td"); td.textContent = t; tr.appendChild(td);
      });
      tr.className = "face";
      tbody.appendChild(tr);
    });
  });
  function status() {
    fetch("/api/live", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) {
        if (!s) { return; }
        document.getElementById("fps").textContent = fmt(s.fps, 1);
        document.getElementById("loop-latency").textContent = fmt(s.latency_ms, 0) + " ms";
        document.getElementById("camera").textContent = s.camera || "-";
        var body = document.querySelector("#decisions tbody");
        body.innerHTML = "";
        s.decisions.forEach(function (d) {
          var tr = document.createElement("tr");
          [d.decision, d.name || "unknown", fmt(d.similarity, 3), fmt(d.liveness, 2), d.reason,
           "#" + d.track].forEach(function (t) {
            var td = document.createElement("td"); td.textContent = t; tr.appendChild(td);
          });
          tr.className = d.decision;
          body.appendChild(tr);
        });
      })
      .catch(function () {})
      .then(function () { setTimeout(status, 1000); });
  }
  status();
}

function enrollView() {
  livePicture(document.getElementById("frame"), null);
  var box = document.getElementById("quality");
  function quality() {
    fetch("/api/enroll/quality", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (q) {
        if (!q) { return; }
        function row(id, text, good) {
          var el = document.getElementById(id);
          el.textContent = text;
          el.className = good ? "ok" : "bad";
        }
        row("q-size", q.found ? fmt(q.eye_distance, 0) + " px between the eyes (need " + fmt(q.min_eye_distance, 0) + ")" : "no face", q.size_ok);
        row("q-blur", q.found ? "sharpness " + fmt(q.sharpness, 0) + " (need " + fmt(q.min_sharpness, 0) + ")" : "-", q.sharp_ok);
        row("q-yaw", q.found ? "yaw " + fmt(q.yaw, 2) + " (max " + fmt(q.max_yaw, 2) + ")" : "-", q.yaw_ok);
        row("q-verdict", q.ok ? "good: ready to enroll" : q.reason, q.ok);
        box.dataset.ok = q.ok ? "1" : "0";
      })
      .catch(function () {})
      .then(function () { setTimeout(quality, 700); });
  }
  quality();
}

if (document.body.dataset.page === "live") { liveView(); }
if (document.body.dataset.page === "enroll") { enrollView(); }
