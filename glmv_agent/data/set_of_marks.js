// Collect the visible interactive elements of the page for set-of-marks labelling.
// Evaluated by glmv_agent.envs.web as `page.evaluate(<this file>, options)`.
// Returns boxes in CSS pixels of the top-level viewport; nothing in the DOM is changed.
// Open shadow roots (web components) are searched too; closed ones cannot be seen from here.
(options) => {
  const minArea = (options && options.minArea) || 20;
  const maxElements = (options && options.maxElements) || 500;

  const INTERACTIVE_TAGS = new Set(["A", "BUTTON", "INPUT", "SELECT", "TEXTAREA", "SUMMARY",
                                    "OPTION", "VIDEO", "AUDIO"]);
  const INTERACTIVE_ROLES = new Set(["button", "link", "checkbox", "radio", "tab", "menuitem",
    "menuitemcheckbox", "menuitemradio", "option", "switch", "textbox", "searchbox",
    "combobox", "slider", "spinbutton", "treeitem"]);
  // Elements that already act as one target: their clickable descendants are not labelled.
  const CONTAINER_TAGS = new Set(["A", "BUTTON"]);

  function isInteractive(el, style) {
    if (INTERACTIVE_TAGS.has(el.tagName)) {
      if (el.tagName === "INPUT" && el.type === "hidden") return false;
      if (el.tagName === "A" && !el.hasAttribute("href") && style.cursor !== "pointer" &&
          el.onclick == null) return false;
      return true;
    }
    const role = (el.getAttribute("role") || "").toLowerCase();
    if (INTERACTIVE_ROLES.has(role)) return true;
    if (el.hasAttribute("onclick") || el.onclick != null) return true;
    if (el.isContentEditable && !(el.parentElement && el.parentElement.isContentEditable)) return true;
    if (el.tagName === "IFRAME") return true;
    // Only where the pointer style starts: children inherit `cursor`, they are no new target.
    if (style.cursor === "pointer") {
      const parent = parentOf(el);
      return !parent || parent.ownerDocument.defaultView.getComputedStyle(parent).cursor !== "pointer";
    }
    return false;
  }

  // The parent across shadow boundaries: a shadow root's children belong to its host.
  function parentOf(node) {
    if (node.parentNode && node.parentNode.nodeType === 11) return node.parentNode.host || null;
    return node.parentElement;
  }

  function composedContains(ancestor, node) {
    for (let n = node; n; n = parentOf(n)) if (n === ancestor) return true;
    return false;
  }

  // Every element below `root`, including those in open shadow roots, in document order.
  function* allElements(root) {
    for (const el of root.querySelectorAll("*")) {
      yield el;
      if (el.shadowRoot) yield* allElements(el.shadowRoot);
    }
  }

  // The innermost element at a point, looking into open shadow roots.
  function deepHit(doc, x, y) {
    let hit = doc.elementFromPoint(x, y);
    while (hit && hit.shadowRoot) {
      const inner = hit.shadowRoot.elementFromPoint(x, y);
      if (!inner || inner === hit) break;
      hit = inner;
    }
    return hit;
  }

  function isContainer(el) {
    const role = (el.getAttribute("role") || "").toLowerCase();
    return CONTAINER_TAGS.has(el.tagName) || role === "button" || role === "link";
  }

  function cleanText(el) {
    const raw = el.tagName === "SELECT"
      ? Array.from(el.options).map((o) => o.text).join(" ")
      : (el.innerText !== undefined ? el.innerText : el.textContent) || "";
    return raw.trim().replace(/[ \t]{2,}/g, " ").replace(/\n{2,}/g, "\n");
  }

  // `clip` is the visible part of the document's viewport, in top-level coordinates;
  // `offset` is where the document's (0, 0) lies in the top-level viewport.
  function collect(doc, offset, clip, out) {
    const win = doc.defaultView;
    const all = doc.body ? allElements(doc.body) : [];
    for (const el of all) {
      if (out.length >= maxElements) return;
      const style = win.getComputedStyle(el);
      if (style.visibility === "hidden" || style.display === "none" || Number(style.opacity) === 0) continue;
      if (!isInteractive(el, style)) continue;
      if (el.disabled) continue;
      const r = el.getBoundingClientRect();
      const x1 = Math.max(clip.x1, r.left + offset.x), y1 = Math.max(clip.y1, r.top + offset.y);
      const x2 = Math.min(clip.x2, r.right + offset.x), y2 = Math.min(clip.y2, r.bottom + offset.y);
      if (x2 <= x1 || y2 <= y1 || (x2 - x1) * (y2 - y1) < minArea) continue;
      // Occlusion: something else must not cover the centre of the visible part.
      const cx = (x1 + x2) / 2 - offset.x, cy = (y1 + y2) / 2 - offset.y;
      const hit = deepHit(doc, cx, cy);
      if (!hit || !(hit === el || composedContains(el, hit) ||
                    composedContains(hit, el) && hit.tagName === "LABEL")) continue;

      if (el.tagName === "IFRAME") {
        let inner = null;
        try { inner = el.contentDocument; } catch (e) { inner = null; }
        if (inner && inner.body) {
          const cs = win.getComputedStyle(el);
          const ox = r.left + offset.x + el.clientLeft + parseFloat(cs.paddingLeft || "0");
          const oy = r.top + offset.y + el.clientTop + parseFloat(cs.paddingTop || "0");
          collect(inner, { x: ox, y: oy }, { x1, y1, x2, y2 }, out);
          continue;  // same-origin frame: its own elements are labelled instead
        }
      }
      out.push({
        el, x1, y1, x2, y2,
        tag: el.tagName.toLowerCase(),
        type: el.tagName === "INPUT" || el.tagName === "BUTTON" ? (el.getAttribute("type") || (el.tagName === "BUTTON" ? "submit" : "text")).toLowerCase() : "",
        // Text fields show their content in the screenshot only (as in the GLM-V web setup);
        // button-like inputs are named by their caption.
        text: el.tagName === "TEXTAREA" ? ""
          : el.tagName === "INPUT" ? (["submit", "button", "reset"].includes((el.type || "").toLowerCase()) ? (el.value || "").trim() : "")
          : cleanText(el),
        ariaLabel: el.getAttribute("aria-label") || "",
        attributes: {
          id: el.id || "", name: el.getAttribute("name") || "", role: el.getAttribute("role") || "",
          href: el.getAttribute("href") || "", placeholder: el.getAttribute("placeholder") || "",
          title: el.getAttribute("title") || "",
        },
      });
    }
  }

  const vw = window.innerWidth, vh = window.innerHeight;
  let items = [];
  collect(document, { x: 0, y: 0 }, { x1: 0, y1: 0, x2: vw, y2: vh }, items);

  // Keep one label per target: drop anything inside a link/button that is itself labelled,
  // then keep the innermost of any remaining nested pair.
  const kept = new Set(items.map((i) => i.el));
  items = items.filter((i) => {
    for (let p = parentOf(i.el); p; p = parentOf(p)) {
      if (kept.has(p) && isContainer(p)) return false;
    }
    return true;
  });
  const remaining = new Set(items.map((i) => i.el));
  items = items.filter((i) => !Array.from(remaining).some((o) => o !== i.el && composedContains(i.el, o)));

  // Reading order: rows top to bottom (boxes whose tops are within half a line are one row),
  // left to right inside a row.
  items.sort((a, b) => a.y1 - b.y1);
  const rows = [];
  for (const item of items) {
    const row = rows[rows.length - 1];
    if (row && item.y1 - row.top < Math.max(8, Math.min(row.height, item.y2 - item.y1) / 2)) {
      row.items.push(item);
    } else {
      rows.push({ top: item.y1, height: item.y2 - item.y1, items: [item] });
    }
  }
  const ordered = [];
  for (const row of rows) {
    row.items.sort((a, b) => a.x1 - b.x1);
    ordered.push(...row.items);
  }
  return ordered.map(({ el, ...rest }) => rest);
}
