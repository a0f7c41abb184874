// Resolve once the page has stopped changing: for `quietMs` the same layout signature
// (document size, scroll position, number of elements, ready state, focused element) on
// consecutive animation frames, with no short timer the last action started still pending
// (page_timers.js) and no finite CSS animation or transition running; or give up after
// `timeoutMs`. Resolves to {stable, document, url, fileInputClicked}: whether it was
// stable, an id of this document (set once per document) and the URL it ended at, so the
// caller can tell a navigation it hears about late from one that replaced this document,
// and whether the last action's click reached a file input (page_timers.js notes it).
// (Endless animations and tickers are not waited for: they never end.)
({ quietMs, timeoutMs }) => new Promise((resolve) => {
  const start = performance.now();
  if (!document.__glmvId) document.__glmvId = Math.random().toString(36).slice(2);
  const finish = (stable) => resolve({
    stable, document: document.__glmvId, url: location.href,
    fileInputClicked: !!(window.__glmvTimers && window.__glmvTimers.fileInputClicked),
  });
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

  function busy() {
    const timers = window.__glmvTimers;
    if (timers && timers.pending.size > 0) return true;
    if (!document.getAnimations) return false;
    return document.getAnimations().some((a) => a.playState === "running" && a.effect &&
      Number.isFinite(a.effect.getComputedTiming().endTime));
  }

  function tick() {
    const now = performance.now();
    const sig = signature();
    if (sig !== last || busy()) { last = sig; stableSince = now; }
    if (document.readyState === "complete" && now - stableSince >= quietMs) return finish(true);
    if (now - start >= timeoutMs) return finish(false);
    // requestAnimationFrame paces the check with rendering; the timer keeps it going
    // when frames are throttled (a background tab).
    let done = false;
    const next = () => { if (!done) { done = true; tick(); } };
    requestAnimationFrame(next);
    const timers = window.__glmvTimers;
    (timers ? timers.originalSetTimeout : window.setTimeout).call(window, next, 100);
  }
  tick();
})
