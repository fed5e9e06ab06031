// vidarena dashboard: live updates by server-sent events, filters applied on change, and the
// expensive statistics loaded on request. No build step, no library.
(function () {
  "use strict";

  var live = document.getElementById("live");
  var status = document.getElementById("live-status");
  var filters = document.getElementById("filters");
  var advanced = document.getElementById("advanced-body");

  function setStatus(state, text) {
    if (!status) return;
    status.dataset.state = state;
    status.querySelector(".text").textContent = text;
  }

  // Times read like the server's everywhere: 24-hour UTC, marked (never the viewer's locale).
  function clock() {
    return new Date().toISOString().slice(11, 19) + " UTC";
  }

  // Replace the live part, keeping which <details> were open and the scroll position.
  function replaceLive(html) {
    var open = Array.prototype.map.call(live.querySelectorAll("details[open][id]"), function (d) {
      return d.id;
    });
    var y = window.scrollY;
    live.innerHTML = html;
    open.forEach(function (id) {
      var details = document.getElementById(id);
      if (details) details.open = true;
    });
    window.scrollTo(0, y);
  }

  function connect() {
    if (!live || !window.EventSource) {
      setStatus("error", "Live updates need a current browser; reload to refresh.");
      return;
    }
    var source = new EventSource(live.dataset.eventsUrl);
    source.addEventListener("open", function () {
      setStatus("live", "Live");
    });
    source.addEventListener("summary", function (event) {
      replaceLive(event.data);
      setStatus("live", "Live · updated " + clock());
    });
    source.addEventListener("error", function () {
      if (source.readyState === EventSource.CLOSED) {
        setStatus("error", "Disconnected: reload the page (your session may have expired).");
      } else {
        setStatus("connecting", "Reconnecting…");
      }
    });
  }

  // Phones: start with the filters folded away, the numbers first.
  var tools = document.getElementById("dash-tools");
  if (tools && window.matchMedia("(max-width: 600px)").matches) tools.open = false;

  // Filters: apply as soon as a checkbox or select changes (the number field on Enter).
  if (filters) {
    filters.addEventListener("change", function (event) {
      if (event.target.matches("input[type=checkbox], select")) filters.requestSubmit();
    });
  }

  // Robustness panel: fetched on request; "Recompute" inside it asks for a fresh computation.
  function loadAdvanced(url) {
    loadInto(advanced, url);
  }

  function loadInto(body, url) {
    body.setAttribute("aria-busy", "true");
    var note = document.createElement("p");
    note.className = "muted";
    note.textContent = "Computing… (seconds for large studies)";
    body.prepend(note);
    fetch(url, { headers: { Accept: "text/html" }, credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) throw new Error(response.status + " " + response.statusText);
        return response.text();
      })
      .then(function (html) {
        body.innerHTML = html;
      })
      .catch(function (error) {
        note.textContent = "Could not compute: " + error.message;
      })
      .finally(function () {
        body.removeAttribute("aria-busy");
      });
  }

  if (advanced) {
    advanced.addEventListener("click", function (event) {
      var link = event.target.closest("[data-load-advanced]");
      if (!link) return;
      event.preventDefault();
      loadAdvanced(link.getAttribute("href"));
    });
  }

  // Blinding audit panel: the same, into its own body.
  var blinding = document.getElementById("blinding-body");
  if (blinding) {
    blinding.addEventListener("click", function (event) {
      var link = event.target.closest("[data-load-blinding]");
      if (!link) return;
      event.preventDefault();
      loadInto(blinding, link.getAttribute("href"));
    });
  }

  connect();
})();
