// Live render panel: polls the study's progress JSON while anything is queued or rendering.
(function () {
  "use strict";
  const panel = document.getElementById("render");
  if (!panel) return;
  const url = panel.dataset.progressUrl;
  const status = panel.querySelector('[data-field="render-status"]');

  function set(row, field, text) {
    const cell = row.querySelector('[data-field="' + field + '"]');
    if (cell && cell.textContent !== text) cell.textContent = text;
  }

  let wasActive = false;

  // Times read like the server's everywhere: 24-hour UTC, marked.
  function utcClock(date) {
    return date.toISOString().slice(11, 19) + " UTC";
  }

  function failedCount(progress) {
    return progress.arms.reduce((sum, arm) => sum + (arm.counts.failed || 0), 0);
  }

  function showStatus(progress) {
    const when = utcClock(new Date());
    if (progress.active) {
      status.textContent = "Rendering… updated " + when + ".";
    } else if (wasActive && failedCount(progress)) {
      // The errors and counts above the fold were rendered with the page: offer a fresh one.
      status.textContent = "Rendering stopped at " + when + " with failed clips. ";
      const reload = document.createElement("a");
      reload.href = "#render";
      reload.textContent = "Reload to see the errors";
      reload.addEventListener("click", (event) => {
        event.preventDefault();
        window.location.hash = "render";
        window.location.reload();
      });
      status.append(reload);
    } else if (!status.querySelector("a")) {
      status.textContent = "Nothing is rendering (checked " + when + ").";
    }
    wasActive = progress.active;
  }

  function show(progress) {
    for (const arm of progress.arms) {
      const row = panel.querySelector('tr[data-arm="' + CSS.escape(arm.arm) + '"]');
      if (!row) continue;
      const n = (key) => String(arm.counts[key] || 0);
      set(row, "queued", n("queued"));
      set(row, "rendering", n("rendering"));
      set(row, "done", n("done") + " / " + arm.total);
      set(row, "failed", n("failed"));
      set(row, "now", arm.rendering.map((r) => "step " + r.step + "/" + r.total).join(", ") || "—");
      set(row, "median", arm.median_seconds == null ? "—" : arm.median_seconds.toFixed(1));
      set(row, "eta", arm.eta_seconds ? Math.round(arm.eta_seconds) + " s" : "—");
    }
    showStatus(progress);
  }

  async function poll() {
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error("HTTP " + response.status);
      const progress = await response.json();
      show(progress);
      setTimeout(poll, progress.active ? 1500 : 5000);
    } catch (error) {
      status.textContent = "Progress unavailable (" + error.message + "); retrying.";
      setTimeout(poll, 5000);
    }
  }
  poll();
})();
