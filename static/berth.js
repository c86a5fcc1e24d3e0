// berth web UI: progressive enhancement only; every page works without this file.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Copy buttons: shown only where the clipboard can be written.
  if (navigator.clipboard) {
    for (const b of document.querySelectorAll("button.copy[data-copy]")) {
      b.hidden = false;
      b.addEventListener("click", async () => {
        try {
          await navigator.clipboard.writeText(b.dataset.copy);
          b.textContent = "Copied";
          b.classList.add("copied");
        } catch (e) {
          b.textContent = "Copy failed";
        }
        setTimeout(() => { b.textContent = "Copy"; b.classList.remove("copied"); }, 1500);
      });
    }
  }
  // Typed confirmation: deleting several things is enabled once the name is typed.
  for (const input of document.querySelectorAll("input[data-confirm]")) {
    const form = input.form;
    const button = form.querySelector("button[type=submit]");
    const update = () => {
      const chosen = form.querySelectorAll("input[type=checkbox]:checked").length;
      button.disabled = chosen === 0 || (chosen > 1 && input.value.trim() !== input.dataset.confirm);
      button.textContent = chosen > 1 ? `Delete ${chosen} tags` : "Delete selected";
    };
    form.addEventListener("input", update);
    form.addEventListener("change", update);
    update();
  }
});
