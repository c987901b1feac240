// The login page's status poll (issue 3 §3). Every second: GET the status, draw the new QR code
// while waiting, show the status, and go on to /continue once the phone has decided.
// The QR code is drawn here from its payload (qrcode-generator, vendored), so a poll costs the
// portal a few store reads and no image. Without JavaScript the page shows a server-drawn code
// (<noscript>), reloads itself through /continue, and the cancel form works.
"use strict";
(function () {
  var root = document.getElementById("login");
  if (!root) { return; }
  var statusUrl = root.getAttribute("data-status-url");
  var continueUrl = root.getAttribute("data-continue-url");
  var statusText = document.getElementById("status");
  var qr = document.getElementById("qr");
  var link = document.getElementById("same-device");
  var words = {};
  document.querySelectorAll("#status-words li").forEach(function (item) {
    words[item.getAttribute("data-status")] = item.textContent;
  });
  var terminal = { approved: true, declined: true, expired: true, cancelled: true };
  var timer = null;

  function draw(payload) {
    var code = qrcode(0, "M");  // 0: the smallest version that holds the payload
    code.addData(payload);
    code.make();
    qr.src = code.createDataURL(5, 4);  // 5 px per module, the 4-module quiet zone
    qr.setAttribute("data-payload", payload);
    qr.hidden = false;
  }

  function show(status) {
    root.setAttribute("data-status", status);
    if (words[status]) { statusText.textContent = words[status]; }
  }

  function poll() {
    fetch(statusUrl, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.status === 503 || response.status === 429) { statusText.textContent = words.unavailable; }
        return response.ok ? response.json() : null;  // an outage is waited out: the next poll retries
      })
      .then(function (body) {
        if (!body) { return; }
        show(body.status);
        if (body.qr_payload) { draw(body.qr_payload); }
        if (body.same_device && link) { link.setAttribute("href", body.same_device); }
        if (body.status !== "pending") { qr.classList.add("done"); }
        if (terminal[body.status]) {
          window.clearInterval(timer);
          window.location.assign(continueUrl);
        }
      })
      .catch(function () { /* a missed poll is retried in a second */ });
  }

  if (root.getAttribute("data-status") === "pending") { draw(qr.getAttribute("data-payload")); }
  timer = window.setInterval(poll, 1000);
})();
