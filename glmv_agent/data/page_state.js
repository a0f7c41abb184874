// Small facts about the page for an observation and for typing:
// whether the focused element (through shadow roots and same-origin frames) is a password
// field and whether it shows a text caret (an editable field), and what kind of element lies under a viewport point (CSS pixels) and whether
// typing there would go into a password field (the field itself, or a <label> of one).
// With `selectLabel`, the <select> under the point gets the option with that text chosen
// (exact text first, then case-insensitive, then a unique partial match), firing the
// `input` and `change` events; `selected` reports the option text or null.
({ x, y, selectLabel }) => {
  function deepActive() {
    let el = document.activeElement;
    for (;;) {
      if (el && el.shadowRoot && el.shadowRoot.activeElement) { el = el.shadowRoot.activeElement; continue; }
      if (el && el.tagName === "IFRAME") {
        let inner = null;
        try { inner = el.contentDocument; } catch (e) { inner = null; }
        if (inner && inner.activeElement) { el = inner.activeElement; continue; }
      }
      return el;
    }
  }
  function deepAt(px, py) {
    let doc = document, el = doc.elementFromPoint(px, py);
    while (el && el.tagName === "IFRAME") {
      let inner = null;
      try { inner = el.contentDocument; } catch (e) { inner = null; }
      if (!inner) break;
      const r = el.getBoundingClientRect();
      px -= r.left + el.clientLeft; py -= r.top + el.clientTop;
      const next = inner.elementFromPoint(px, py);
      if (!next) break;
      el = next;
    }
    return el;
  }
  const isPassword = (el) => !!el && el.tagName === "INPUT" && (el.type || "").toLowerCase() === "password";
  const NO_CARET_INPUTS = new Set(["button", "checkbox", "color", "file", "hidden", "image",
                                   "radio", "range", "reset", "submit"]);
  const isEditable = (el) => !!el && (el.isContentEditable || el.tagName === "TEXTAREA" ||
    (el.tagName === "INPUT" && !NO_CARET_INPUTS.has((el.type || "").toLowerCase())));
  const active = deepActive();
  const result = {
    focusedIsPassword: isPassword(active),
    focusedEditable: isEditable(active),
    focusedTag: active ? active.tagName.toLowerCase() : "",
    targetTag: "",
    targetIsPassword: false,
  };
  if (x !== null && x !== undefined) {
    const el = deepAt(x, y);
    result.targetTag = el ? el.tagName.toLowerCase() : "";
    const label = el && el.closest ? el.closest("label") : null;
    result.targetIsPassword = isPassword(el) || (!!label && isPassword(label.control));
    if (selectLabel !== null && selectLabel !== undefined && el && el.tagName === "SELECT") {
      const options = Array.from(el.options);
      const want = String(selectLabel).trim();
      const norm = (t) => t.trim().toLowerCase();
      let match = options.find((o) => o.text.trim() === want || o.value === want)
        || options.find((o) => norm(o.text) === norm(want));
      if (!match) {
        const partial = options.filter((o) => norm(o.text).includes(norm(want)));
        if (partial.length === 1) match = partial[0];
      }
      result.options = options.map((o) => o.text.trim());
      result.selected = null;
      if (match && !match.disabled) {
        el.value = match.value;
        match.selected = true;
        el.dispatchEvent(new Event("input", { bubbles: true }));
        el.dispatchEvent(new Event("change", { bubbles: true }));
        result.selected = match.text.trim();
      }
    }
  }
  return result;
}
