// A task's log as server-sent events, read with fetch rather than EventSource, because
// EventSource cannot send the Authorization header. It does what EventSource does on a
// dropped connection, on purpose: reconnect, sending `Last-Event-ID` (the `seq` of the
// last event received), so the gateway resumes right after it and nothing is lost or
// shown twice.

import { authHeaders } from "./api.js";

const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED"]);
const FIRST_RETRY_MS = 250;
const LAST_RETRY_MS = 5000;

/** Splits an SSE body into messages ({id, event, data}) as chunks arrive. */
class SseParser {
  constructor() {
    this.buffer = "";
  }

  *push(text) {
    this.buffer += text;
    // Messages end with a blank line; a message may arrive over several chunks.
    let end;
    while ((end = this.buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      const message = { id: null, event: "message", data: [] };
      for (const line of block.split(/\r?\n/)) {
        if (!line || line.startsWith(":")) continue; // keep-alive comments
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") message.data.push(value);
        else if (field === "id") message.id = value;
        else if (field === "event") message.event = value;
      }
      if (message.data.length) yield { ...message, data: message.data.join("\n") };
    }
  }
}

/** Follows the log of `taskId` until the task ends (or `stop()`).
 *  `onEvent(event)` gets each event once, in order; `onStatus(status)` hears
 *  "connecting", "live", "reconnecting", "ended" and "unauthorized" (and the
 *  reconnections so far);
 *  `follow: false` reads the history only. */
export class LogStream {
  constructor(taskId, { onEvent, onStatus = () => {}, follow = true } = {}) {
    this.taskId = taskId;
    this.onEvent = onEvent;
    this.onStatus = onStatus;
    this.follow = follow;
    this.lastSeq = 0;
    this.reconnects = 0;
    this.ended = false;
    this.controller = null;
    this.stopped = false;
  }

  status(name) {
    this.onStatus(name, this.reconnects);
  }

  start() {
    this.run();
    return this;
  }

  stop() {
    this.stopped = true;
    if (this.controller) this.controller.abort();
  }

  async run() {
    let delay = FIRST_RETRY_MS;
    while (!this.stopped && !this.ended) {
      const outcome = await this.connect();
      if (outcome === "unauthorized" || outcome === "refused") {
        this.status(outcome);
        return;
      }
      if (this.stopped || this.ended) break;
      if (outcome === "received") delay = FIRST_RETRY_MS;
      this.reconnects += 1;
      this.status("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, LAST_RETRY_MS);
    }
    if (this.ended) this.status("ended");
  }

  /** One connection; says how it ended: "ended", "unauthorized", "refused" (another
   *  4xx: final), "received" (events came, then it broke) or "failed" (nothing came). */
  async connect() {
    this.controller = new AbortController();
    const query = new URLSearchParams({ follow: String(this.follow) });
    const headers = authHeaders({ Accept: "text/event-stream" });
    if (this.lastSeq > 0) headers["Last-Event-ID"] = String(this.lastSeq);
    this.status(this.lastSeq > 0 ? "reconnecting" : "connecting");
    let received = false;
    try {
      const url = `/api/v1/tasks/${encodeURIComponent(this.taskId)}/logs?${query}`;
      const response = await fetch(url, {
        headers,
        signal: this.controller.signal,
        cache: "no-store",
      });
      if (response.status === 401) return "unauthorized";
      if (response.status === 204) {
        // Ended, and nothing is left after what we have.
        this.ended = true;
        return "ended";
      }
      // Any other 4xx (no such task, a bad request) will not change by asking again.
      if (response.status >= 400 && response.status < 500) return "refused";
      if (!response.ok || !response.body) return "failed";
      this.status("live");
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      const parser = new SseParser();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const message of parser.push(value)) {
          if (message.event === "error") return received ? "received" : "failed";
          const event = JSON.parse(message.data);
          if (event.seq <= this.lastSeq) continue; // already shown
          this.lastSeq = event.seq;
          received = true;
          this.onEvent(event);
          if (event.type === "state" && TERMINAL.has(event.state)) this.ended = true;
        }
      }
      // The stream ends after a task's terminal event, or with the history alone.
      if (!this.follow) this.ended = true;
      return this.ended ? "ended" : received ? "received" : "failed";
    } catch (error) {
      if (error.name === "AbortError" && this.stopped) return "failed";
      return received ? "received" : "failed";
    }
  }
}
