// The login page's status poll (issue 3 §3). Every second: GET the status, swap in the new QR
// code while waiting, show the status, and go on to /continue once the phone has decided.
// Without JavaScript the page still shows the QR code and the cancel form works.
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

  function show(status) {
    root.setAttribute("data-status", status);
    if (words[status]) { statusText.textContent = words[status]; }
  }

  function poll() {
    fetch(statusUrl, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (body) {
        if (!body) { return; }
        show(body.status);
        if (body.qr_svg) { qr.src = body.qr_svg; qr.setAttribute("data-payload", body.qr_payload); }
        if (body.same_device && link) { link.setAttribute("href", body.same_device); }
        if (body.status !== "pending") { qr.classList.add("done"); }
        if (terminal[body.status]) {
          window.clearInterval(timer);
          window.location.assign(continueUrl);
        }
      })
      .catch(function () { /* a missed poll is retried in a second */ });
  }

  timer = window.setInterval(poll, 1000);
})();
