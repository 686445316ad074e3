/**
 * jobpulse.js — watch a jobpulse job from a browser page.
 *
 * A dependency-free ES module served by every jobpulse web process at `/static/jobpulse.js`:
 *
 *     import { watchJob } from "/static/jobpulse.js";
 *
 *     const watcher = watchJob(`/jobs/${jobId}/events`, {
 *       onProgress: (event) => { bar.value = event.progress; },
 *       onDone: (event) => { text.textContent = event.status; },
 *     });
 *     // watcher.close() stops watching.
 *
 * It wraps `EventSource` and listens to the stream's named events, `status`, `progress` and `lost`, whose
 * `data` is JSON (see the README's Events table). Every event is delivered at most once and in order: one
 * whose id is not above the last one delivered is ignored, so a bar fed from `onProgress` never goes
 * backwards (unless a retried job starts over, which its `status` event says).
 *
 * Dropped connections are resumed. `EventSource` reconnects by itself after a network error, sending
 * `Last-Event-ID`; but it gives up for good on any answer other than 200 (the 503 of a web process that
 * is shutting down, or the 204 for a client that already has the terminal event). Then, unless the job
 * has ended, watchJob asks `jobUrl` for the job's state: a job that has finished meanwhile is reported
 * from that state (`onStatus`, then `onDone`); a running one is watched again, on a new `EventSource`,
 * from the last id delivered; a job that no longer exists (404), or that the server will not show
 * (401 or 403: a missing, expired or wrong token), ends the watch with `onError`; no answer, or a 503,
 * means asking again. Both waits back off: 0.5 s, doubling up to 10 s, and back to 0.5 s once
 * an event arrives.
 *
 * On a server with API keys, reading a job takes its token (the `token` of the submission's answer):
 * pass it as the `token` option. It goes on the stream's URL as `?token=` (`EventSource` cannot send
 * headers) and as `Authorization: Bearer TOKEN` when the job's state is fetched.
 *
 * @module jobpulse
 */

/** The statuses that end a job; its stream closes after one of them. */
export const TERMINAL_STATUSES = Object.freeze(["succeeded", "failed", "cancelled"]);

const FIRST_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 10_000;

/**
 * @typedef {object} JobProgress `data` of a `progress` event.
 * @property {string} job_id
 * @property {number} ts Publisher's clock, epoch seconds.
 * @property {number} progress Percent complete, 0 to 100.
 * @property {string} [message]
 * @property {number} [current]
 * @property {number} [total]
 */

/**
 * @typedef {object} JobStatus `data` of a `status` event.
 * @property {string} job_id
 * @property {number} ts Publisher's clock, epoch seconds.
 * @property {"queued"|"running"|"retrying"|"succeeded"|"failed"|"cancelled"} status
 * @property {number} attempt 1 for the first run, 0 before it.
 * @property {string} [error] Why the job failed, or is being retried.
 * @property {*} [result] The task's return value, on `succeeded`.
 */

/**
 * @typedef {object} JobLost `data` of a `lost` event: events after `last_event_id` were trimmed from the
 *   job's history; the stream goes on from `first_retained_id`.
 * @property {string} job_id
 * @property {number} ts
 * @property {number} last_event_id
 * @property {number} first_retained_id
 * @property {object} job The job's current state, as `GET /jobs/{id}` shows it.
 */

/**
 * @typedef {object} WatchOptions
 * @property {(event: JobProgress) => void} [onProgress] Each progress update.
 * @property {(event: JobStatus) => void} [onStatus] Each status change, the terminal one included.
 * @property {(event: JobStatus) => void} [onDone] Once, with the terminal status (`succeeded`,
 *   `failed` or `cancelled`); the watch is over. A failed *job* arrives here, not in `onError`.
 * @property {(event: JobLost) => void} [onLost] Events were lost to history trimming; `event.job` is
 *   the job's current state.
 * @property {(error: Error & {status?: number}) => void} [onError] Watching itself failed for good: the
 *   job does not exist (`error.status` 404), or the server refuses to show it (401 or 403, a missing,
 *   expired or wrong `token`); the watch is over.
 * @property {(state: "connecting"|"open"|"reconnecting"|"closed") => void} [onConnection] The stream's
 *   state, for showing "reconnecting…".
 * @property {number|string} [lastEventId] Resume after this event id (e.g. `last_event_id` of
 *   `GET /jobs/{id}`) instead of replaying the job's history from its start.
 * @property {string} [jobUrl] The job's URL; by default `eventsUrl` without its trailing `/events`.
 * @property {string|null} [token] The job's token, for a server with API keys (null or absent: none).
 *   By default a `token` query parameter already on `eventsUrl`.
 */

/**
 * Watch a job's event stream until the job ends, resuming after dropped connections.
 *
 * Callbacks are not called after `close()`.
 *
 * @param {string} eventsUrl The job's `events_url`, e.g. `/jobs/ID/events`.
 * @param {WatchOptions} [options]
 * @returns {{close(): void, readonly lastEventId: number}}
 */
export function watchJob(eventsUrl, options = {}) {
  const { onProgress, onStatus, onDone, onLost, onError, onConnection } = options;
  const base = globalThis.document?.baseURI ?? globalThis.location?.href; // a page, or a worker
  const streamUrl = new URL(eventsUrl, base);
  const jobUrl = options.jobUrl ? new URL(options.jobUrl, base) : defaultJobUrl(streamUrl);
  const token = options.token || streamUrl.searchParams.get("token") || null;
  if (token) streamUrl.searchParams.set("token", token);
  const jobHeaders = { Accept: "application/json" };
  if (token) jobHeaders.Authorization = `Bearer ${token}`;

  let lastId = toId(options.lastEventId) ?? 0;
  let source = null;
  let timer = null;
  let checking = null; // AbortController of the job-state request under way
  // Two backoffs: before asking for the job's state again (the server is unreachable), and before opening
  // a stream again (the server answers, but streams keep failing). An event resets both.
  let checkDelayMs = FIRST_BACKOFF_MS;
  let openDelayMs = FIRST_BACKOFF_MS;
  let connection = null;
  let stopped = false;

  const call = (callback, ...args) => {
    if (stopped || typeof callback !== "function") return;
    try {
      callback(...args);
    } catch (error) {
      reportLater(error); // a broken callback must not break the watch
    }
  };

  const setConnection = (state) => {
    if (state === connection) return;
    connection = state;
    call(onConnection, state);
  };

  const stop = () => {
    stopped = true;
    clearTimeout(timer);
    checking?.abort();
    source?.close();
    source = null;
  };

  const finish = (statusEvent) => {
    setConnection("closed");
    call(onDone, statusEvent);
    stop();
  };

  const fail = (error) => {
    setConnection("closed");
    call(onError, error);
    stop();
  };

  /** Parses an event's data and checks its id; null if it was delivered already or is unreadable. */
  const accept = (message) => {
    const id = toId(message.lastEventId);
    if (id !== null && id <= lastId) return null;
    let data;
    try {
      data = JSON.parse(message.data);
    } catch {
      return null;
    }
    if (id !== null) lastId = id;
    checkDelayMs = openDelayMs = FIRST_BACKOFF_MS;
    setConnection("open");
    return data;
  };

  const open = () => {
    if (stopped) return;
    const url = new URL(streamUrl);
    if (lastId > 0) url.searchParams.set("last_event_id", String(lastId));
    setConnection(connection === null ? "connecting" : "reconnecting");
    const es = new EventSource(url);
    source = es;
    es.onopen = () => setConnection("open");
    es.onerror = () => {
      if (es !== source) return;
      if (es.readyState === EventSource.CONNECTING) {
        setConnection("reconnecting"); // the browser retries by itself, sending Last-Event-ID
      } else {
        // Given up for good: a 503 from a web process that is stopping, a 204 after the terminal event,
        // a proxy's error page... Ask the job how it is, then carry on from there.
        es.close();
        source = null;
        setConnection("reconnecting");
        check();
      }
    };
    es.addEventListener("progress", (message) => {
      const data = accept(message);
      if (data) call(onProgress, data);
    });
    es.addEventListener("status", (message) => {
      const data = accept(message);
      if (!data) return;
      call(onStatus, data);
      if (TERMINAL_STATUSES.includes(data.status)) finish(data);
    });
    es.addEventListener("lost", (message) => {
      // `lost` has no id of its own: the retained history follows it.
      try {
        call(onLost, JSON.parse(message.data));
      } catch {
        // unreadable: the events that follow still carry the job on
      }
    });
  };

  const later = (then, delayMs) => {
    clearTimeout(timer);
    if (!stopped) timer = setTimeout(then, delayMs);
  };

  const checkLater = () => {
    later(check, checkDelayMs);
    checkDelayMs = Math.min(checkDelayMs * 2, MAX_BACKOFF_MS);
  };

  const openLater = () => {
    later(open, openDelayMs);
    openDelayMs = Math.min(openDelayMs * 2, MAX_BACKOFF_MS);
  };

  const check = async () => {
    if (stopped) return;
    checking = new AbortController();
    let response;
    let job;
    try {
      response = await fetch(jobUrl, {
        headers: jobHeaders,
        cache: "no-store",
        signal: checking.signal,
      });
      job = response.ok ? await response.json() : null;
    } catch {
      if (!stopped) checkLater(); // network error: the server may be restarting
      return;
    } finally {
      checking = null;
    }
    if (stopped) return;
    if (response.status === 404) {
      fail(Object.assign(new Error("job not found"), { status: 404 }));
    } else if (response.status === 401 || response.status === 403) {
      fail(Object.assign(new Error("not allowed to read the job"), { status: response.status }));
    } else if (!response.ok || !job) {
      checkLater(); // 503 and friends: try again later
    } else if (TERMINAL_STATUSES.includes(job.status)) {
      const event = statusEventOf(job);
      call(onStatus, event);
      finish(event);
    } else {
      checkDelayMs = FIRST_BACKOFF_MS; // the server answers again
      openLater();
    }
  };

  open();
  return {
    /** Stop watching; no callback is called after this. */
    close() {
      stop();
    },
    /** The id of the last event delivered: pass it as `lastEventId` to watch again from there later. */
    get lastEventId() {
      return lastId;
    },
  };
}

function defaultJobUrl(eventsUrl) {
  const url = new URL(eventsUrl);
  url.pathname = url.pathname.replace(/\/events\/?$/, "");
  url.search = "";
  return url;
}

/** An event id as a number, or null when there is none (a `lost` event) or it is not one. */
function toId(value) {
  if (value === undefined || value === null || value === "") return null;
  const id = Number(value);
  return Number.isSafeInteger(id) && id >= 0 ? id : null;
}

/** A status event built from a job's state (`GET /jobs/{id}`), with the fields a stream's would have. */
function statusEventOf(job) {
  const event = { job_id: job.id, ts: Date.parse(job.finished_at ?? job.created_at) / 1000 };
  event.status = job.status;
  event.attempt = job.attempt;
  if (job.error != null) event.error = job.error;
  if (job.result != null) event.result = job.result;
  return event;
}

function reportLater(error) {
  if (typeof globalThis.reportError === "function") globalThis.reportError(error);
  else setTimeout(() => { throw error; });
}
