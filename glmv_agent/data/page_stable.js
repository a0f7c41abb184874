// Resolve once the page has stopped changing: the same layout signature (document size,
// scroll position, number of elements, ready state, focused element) on consecutive
// animation frames for `quietMs`, or give up after `timeoutMs`. Resolves to true when stable.
({ quietMs, timeoutMs }) => new Promise((resolve) => {
  const start = performance.now();
  let last = null;
  let stableSince = start;

  function signature() {
    const root = document.documentElement;
    const body = document.body;
    return [
      document.readyState,
      root ? root.scrollWidth : 0, root ? root.scrollHeight : 0,
      body ? body.getBoundingClientRect().height : 0,
      window.scrollX, window.scrollY,
      document.getElementsByTagName("*").length,
      document.activeElement ? document.activeElement.tagName : "",
    ].join("|");
  }

  function tick() {
    const now = performance.now();
    const sig = signature();
    if (sig !== last) { last = sig; stableSince = now; }
    if (document.readyState === "complete" && now - stableSince >= quietMs) return resolve(true);
    if (now - start >= timeoutMs) return resolve(false);
    // requestAnimationFrame paces the check with rendering; the timer keeps it going
    // when frames are throttled (a background tab).
    let done = false;
    const next = () => { if (!done) { done = true; tick(); } };
    requestAnimationFrame(next);
    setTimeout(next, 100);
  }
  tick();
})
