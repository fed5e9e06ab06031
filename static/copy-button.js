// Copy buttons: <button data-copy="ID" data-copy-status="ID2" hidden> copies the text of element
// ID (a <code> or a <textarea>) and says so in element ID2 (a live region). Shown only when this script runs; the Clipboard API needs a secure context
// (https or localhost), so plain-http servers fall back to selecting the text and execCommand.
(function () {
  "use strict";

  function textOf(target) {
    return "value" in target && target.tagName !== "BUTTON" ? target.value : target.textContent;
  }

  function selectText(target) {
    if (typeof target.select === "function") {
      target.focus();
      target.select();
      return;
    }
    const range = document.createRange();
    range.selectNodeContents(target);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  function fallbackCopy(target) {
    selectText(target);
    try {
      return document.execCommand("copy");
    } catch (error) {
      return false;
    }
  }

  async function copy(target) {
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(textOf(target));
        return true;
      } catch (error) {
        // Permission refused: try the old way below.
      }
    }
    return fallbackCopy(target);
  }

  for (const button of document.querySelectorAll("button[data-copy]")) {
    const target = document.getElementById(button.dataset.copy);
    if (!target) continue;
    const status = document.getElementById(button.dataset.copyStatus || "");
    button.hidden = false;
    button.addEventListener("click", async function () {
      const copied = await copy(target);
      if (!copied) selectText(target);
      if (status) status.textContent = copied ? "Copied." : "Selected: press Ctrl+C (⌘C) to copy.";
    });
  }
})();
