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
    status.textContent = progress.active ? "Rendering… updates live." : "Nothing is rendering.";
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
