// Hide (true) or show again (false) the blinking text caret in this document and its
// same-origin frames, around one screenshot taken through the DevTools protocol, so the
// image does not depend on the blink phase (page.screenshot() hides it the same way).
// An adopted style sheet, not a <style> element: the DOM is not changed, so the page's
// mutation observers and the stability check never see it.
(hide) => {
  const visit = (win) => {
    let doc;
    try { doc = win.document; } catch (e) { return; }  // a cross-origin frame
    if (!doc || !doc.adoptedStyleSheets) return;
    const sheets = doc.adoptedStyleSheets.filter((sheet) => !sheet.__glmvCaret);
    if (hide) {
      const sheet = new win.CSSStyleSheet();  // made in the frame's own realm, as required
      sheet.replaceSync("* { caret-color: transparent !important; }");
      sheet.__glmvCaret = true;
      sheets.push(sheet);
    }
    doc.adoptedStyleSheets = sheets;
    for (let i = 0; i < win.frames.length; i++) visit(win.frames[i]);
  };
  visit(window);
  return true;
}
