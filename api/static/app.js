// arflow dashboard behaviour that is not htmx: kept out of the templates, since the
// Content-Security-Policy allows scripts from our own files only (no inline handlers).
document.addEventListener("click", (event) => {
  const box = event.target.closest("input[data-select-all]");
  if (!box) return;
  document.querySelectorAll(box.dataset.selectAll).forEach((b) => { b.checked = box.checked; });
});
