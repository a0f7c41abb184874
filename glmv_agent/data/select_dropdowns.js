// Make native <select> drop-downs visible in screenshots.
// Headless browsers draw a select's option list outside the page, so a screenshot never
// shows it. As the GLM-V web setup does, a click on a single-choice <select> opens an
// in-page list of its options instead; clicking an option selects it and fires the
// `input` and `change` events a user's choice would. Installed once per document.
() => {
  if (window.__glmvSelectDropdowns) return false;
  window.__glmvSelectDropdowns = true;
  const doc = document;
  let open = null;  // { select, list }

  function isDropdownSelect(el) {
    return el instanceof HTMLSelectElement && !el.multiple && !(el.size > 1) && !el.disabled;
  }

  function close() {
    if (open) { open.list.remove(); open = null; }
  }

  function show(select) {
    close();
    const style = getComputedStyle(select);
    const rect = select.getBoundingClientRect();
    const list = doc.createElement("div");
    list.setAttribute("data-glmv-select-list", "");
    list.setAttribute("role", "listbox");
    Object.assign(list.style, {
      position: "absolute", zIndex: "2147483646", boxSizing: "border-box",
      left: rect.left + window.scrollX + "px", top: rect.bottom + window.scrollY + "px",
      minWidth: rect.width + "px", maxHeight: "60vh", overflowY: "auto",
      background: "#fff", color: "#000", border: "1px solid #888",
      boxShadow: "0 2px 6px rgba(0,0,0,0.25)", fontFamily: style.fontFamily,
      fontSize: style.fontSize, lineHeight: "1.4",
    });
    Array.from(select.options).forEach((option, index) => {
      const row = doc.createElement("div");
      row.textContent = option.text;
      row.setAttribute("role", "option");
      row.setAttribute("aria-selected", String(index === select.selectedIndex));
      Object.assign(row.style, {
        padding: "2px 6px", cursor: option.disabled ? "default" : "pointer", whiteSpace: "pre",
        background: index === select.selectedIndex ? "#dde6ff" : "#fff",
        color: option.disabled ? "#999" : "#000",
      });
      row.addEventListener("mousedown", (e) => e.preventDefault());
      row.addEventListener("click", (e) => {
        e.stopPropagation();
        if (option.disabled) return;
        select.selectedIndex = index;
        select.dispatchEvent(new Event("input", { bubbles: true }));
        select.dispatchEvent(new Event("change", { bubbles: true }));
        close();
        select.focus();
      });
      list.appendChild(row);
    });
    doc.body.appendChild(list);
    open = { select, list };
  }

  doc.addEventListener("mousedown", (e) => {
    if (isDropdownSelect(e.target)) { e.preventDefault(); e.target.focus(); }
  }, true);
  doc.addEventListener("click", (e) => {
    const target = e.target;
    if (isDropdownSelect(target)) {
      if (open && open.select === target) close(); else show(target);
    } else if (!(open && open.list.contains(target))) {
      close();
    }
  }, true);
  // The list is placed for the current layout; any scroll or resize closes it.
  window.addEventListener("resize", close);
  doc.addEventListener("scroll", (e) => { if (!(open && open.list.contains(e.target))) close(); }, true);
  return true;
}
