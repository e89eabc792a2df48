// Polling for what the API offers no stream of (resources, task lists): one call at a
// time, the next `intervalMs` after the last one ended, so a slow server is never
// asked twice at once.

export const POLL_MS = 2000;

/** Runs `refresh()` now and then every `intervalMs` until `stop()`. An error goes to
 *  `onError` and polling carries on: the server may be back at the next call. */
export function poll(refresh, { intervalMs = POLL_MS, onError = () => {} } = {}) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    timer = null;
    try {
      await refresh();
    } catch (error) {
      if (!stopped) onError(error);
    }
    if (!stopped) timer = setTimeout(tick, intervalMs);
  };
  tick();
  return {
    stop() {
      stopped = true;
      if (timer !== null) clearTimeout(timer);
    },
    /** Refresh now (after an action) rather than at the next tick. */
    now() {
      if (timer !== null) {
        clearTimeout(timer);
        tick();
      }
    },
  };
}
