// Arm the page-activity tracker right before an action, so the stability check afterwards
// (page_stable.js) also waits for what the action set in motion but has not shown yet:
// short timers (setTimeout up to `maxDelayMs`) created within `windowMs` of arming.
// Timers created later (a page's own polling loops) do not count, so a page that never
// stops scheduling cannot hold the check up beyond that window.
// It also notes a click that reached an <input type=file> (directly or through its label),
// whose file-chooser event the browser reports asynchronously: the caller then waits for it.
// Installed once per document; evaluated by glmv_agent.envs.web.
({ maxDelayMs, windowMs }) => {
  let state = window.__glmvTimers;
  if (!state) {
    const originalSet = window.setTimeout;
    state = window.__glmvTimers = {
      armedAt: -1, windowMs: 0, maxDelayMs: 0, pending: new Set(),
      originalSetTimeout: originalSet,  // for page_stable.js's own ticks, which never count
    };
    const originalClear = window.clearTimeout;
    window.setTimeout = function (callback, delay, ...args) {
      const now = performance.now();
      const counted = typeof callback === "function" && state.armedAt >= 0 &&
        now - state.armedAt <= state.windowMs && (Number(delay) || 0) <= state.maxDelayMs;
      let id = null;
      const run = counted ? function () {
        state.pending.delete(id);
        return callback.apply(this, arguments);
      } : callback;
      id = originalSet.call(window, run, delay, ...args);
      if (counted) state.pending.add(id);
      return id;
    };
    window.clearTimeout = function (id) {
      state.pending.delete(id);
      return originalClear.call(window, id);
    };
    window.addEventListener("click", (event) => {
      const target = event.target;
      if (target instanceof HTMLInputElement && target.type === "file" && !target.disabled) {
        state.fileInputClicked = true;
      }
    }, true);
  }
  state.fileInputClicked = false;
  state.armedAt = performance.now();
  state.windowMs = windowMs;
  state.maxDelayMs = maxDelayMs;
  state.pending.clear();
  return true;
}
