/**
 * One file's card on the upload page: its upload, then the job that processes it, from the first byte to
 * the result, in two labelled progress bars and in words.
 *
 * The page decides when a card may upload and whether it may hold a live event stream (browsers allow
 * six connections per origin over HTTP/1.1); a card without a stream polls its job instead.
 *
 * On a server with API keys, the upload and Cancel send the key the page was given, and everything that
 * reads the job (its state, its event stream) sends the job's own token, from the upload's answer.
 *
 * The bars and their words are drawn by `meters.js`, a finished job's result by `result.js`.
 *
 * @module card
 */

import { h } from "./element.js";
import { formatBytes, RateMeter } from "./format.js";
import { watchJob } from "./jobpulse.js";
import { buildMeter, showUpload, showWork } from "./meters.js";
import { resultFacts } from "./result.js";
import { forgetUpload, saveUpload } from "./saved.js";
import { detailText, uploadFile } from "./upload.js";

/** States of a card whose job the server is working on. */
const ACTIVE = new Set(["queued", "running", "retrying"]);
/** States after which nothing more will happen: the card can be dismissed. */
const FINISHED = new Set([
  "succeeded",
  "failed",
  "cancelled",
  "refused",
  "upload-failed",
  "upload-cancelled",
  "missing",
  "denied",
]);
/** States in which a card's cancel button does something. */
const CANCELLABLE = new Set(["waiting", "uploading", "sent", ...ACTIVE]);
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

const KEY_NEEDED_TO_CANCEL = "the API key is missing or was not accepted. Check it above, then try again.";

const POLL_MS = 1000;
const MAX_POLL_MS = 10_000;

/** state: [word on the badge, tone] — the word carries the meaning; the tone only adds colour. */
const BADGES = {
  checking: ["Checking", "idle"],
  refused: ["Not uploaded", "problem"],
  waiting: ["Waiting", "idle"],
  uploading: ["Uploading", "busy"],
  sent: ["Uploading", "busy"],
  "upload-failed": ["Upload failed", "problem"],
  "upload-cancelled": ["Cancelled", "muted"],
  queued: ["Queued", "idle"],
  running: ["Processing", "busy"],
  retrying: ["Retrying", "warning"],
  succeeded: ["Done", "success"],
  failed: ["Failed", "problem"],
  cancelled: ["Cancelled", "muted"],
  missing: ["Not found", "muted"],
  denied: ["No access", "muted"],
};

const IMAGE_EXTENSIONS = new Set(["png", "jpg", "jpeg", "gif", "webp", "bmp", "tif", "tiff", "ico", "svg", "avif"]);
const TABLE_EXTENSIONS = new Set(["csv", "tsv", "xls", "xlsx", "ods"]);
const TEXT_EXTENSIONS = new Set(["txt", "md", "log", "json", "xml", "html", "yaml", "yml", "toml", "py", "js"]);

let cardsMade = 0;

function sentence(text) {
  const trimmed = String(text ?? "").trim();
  return /[.!?…]$/.test(trimmed) ? trimmed : `${trimmed}.`;
}

function fileKind(name) {
  const dot = name.lastIndexOf(".");
  const extension = dot > 0 ? name.slice(dot + 1).toLowerCase() : "";
  let kind = "other";
  if (IMAGE_EXTENSIONS.has(extension)) kind = "image";
  else if (TABLE_EXTENSIONS.has(extension)) kind = "table";
  else if (TEXT_EXTENSIONS.has(extension)) kind = "text";
  const label = extension && extension.length <= 4 ? extension.toUpperCase() : "FILE";
  return { kind, label };
}

export class UploadCard {
  /**
   * @param {{name: string, size: number, file?: File, jobId?: string, token?: string, batch: number,
   *   index: number}} what `token` reads the job on a server with API keys
   * @param {{announce: (text: string) => void, changed: () => void, remove: (card: UploadCard) => void,
   *   apiKey: () => string | null, keyRefused: () => void}} page `apiKey()` is the key to send, "" when
   *   one is needed but none was entered, null when the server needs none
   */
  constructor({ name, size, file = null, jobId = null, token = null, batch, index }, page) {
    this.seq = cardsMade++;
    this.key = `card-${this.seq}`;
    this.name = name;
    this.size = size;
    this.file = file;
    this.jobId = jobId;
    this.token = typeof token === "string" && token ? token : null;
    this.eventsUrl = jobId ? `/jobs/${encodeURIComponent(jobId)}/events` : null;
    this.batch = batch;
    this.index = index;
    this.page = page;

    this.state = jobId ? "checking" : "waiting";
    this.problem = ""; // why the card ended without a job result, in words
    this.notice = ""; // a passing problem with an active card ("could not cancel")
    this.retryable = false;
    this.upload = { sent: jobId ? size : 0, started: 0, ended: 0, meter: new RateMeter(), estimate: null };
    this.work = {
      percent: 0,
      message: "",
      current: null,
      total: null,
      attempt: 0,
      startedTs: null,
      endedTs: null,
      meter: new RateMeter(),
      estimate: null,
    };
    this.error = "";
    this.result = null;
    this.lastEventId = 0;
    this.connection = null;
    this.unreachable = false;
    this.cancelling = false;
    this.cancelWhenUploaded = false;
    this.transfer = null;
    this.watcher = null;
    this.pollTimer = null;
    this.pollDelay = POLL_MS;
    this.polling = false;
    this.outcomeShows = "";

    this.build();
    this.render();
  }

  /** Nothing more will happen to this card. */
  get finished() {
    return FINISHED.has(this.state);
  }

  /** Its upload holds a connection. */
  get uploading() {
    return this.state === "uploading" || this.state === "sent";
  }

  /** Its job is under way: it wants a live event stream. */
  get wantsStream() {
    return ACTIVE.has(this.state);
  }

  // ---- building and drawing -------------------------------------------------------------------------

  build() {
    const { kind, label } = fileKind(this.name);
    const nameId = `${this.key}-name`;
    this.badge = h("p", { class: "badge" });
    this.cancelButton = this.button("Cancel", "quiet", () => this.cancel());
    this.retryButton = this.button("Retry", "quiet", () => this.retry());
    this.dismissButton = this.button("Dismiss", "quiet", () => this.dismiss());
    const head = h(
      "header",
      { class: "card-head" },
      h("span", { class: "file-kind", "data-kind": kind, "aria-hidden": "true" }, label),
      h(
        "div",
        { class: "file-title" },
        h("h3", { class: "file-name", id: nameId, title: this.name }, this.name),
        h("p", { class: "file-size" }, formatBytes(this.size)),
      ),
      this.badge,
      h("div", { class: "card-actions" }, this.retryButton, this.cancelButton, this.dismissButton),
    );
    this.uploadMeter = buildMeter(this.key, "upload", "Upload", this.name);
    this.workMeter = buildMeter(this.key, "processing", "Processing", this.name);
    this.meters = h("div", { class: "meters" }, this.uploadMeter.root, this.workMeter.root);
    this.outcome = h("div", { class: "outcome" });
    this.article = h("article", { class: "card-body", "aria-labelledby": nameId }, head, this.outcome);
    this.element = h("li", { class: "card" }, this.article);
  }

  button(text, style, onClick) {
    const button = h(
      "button",
      { type: "button", class: `button ${style}` },
      text,
      h("span", { class: "visually-hidden" }, ` ${this.name}`),
    );
    button.addEventListener("click", () => {
      if (button.getAttribute("aria-disabled") !== "true") onClick();
    });
    return button;
  }

  render() {
    const state = this.state;
    this.element.dataset.state = state;
    const cancelling = this.cancelling || this.cancelWhenUploaded;
    const reconnecting = ACTIVE.has(state) && (this.connection === "reconnecting" || this.unreachable);
    let [word, tone] = BADGES[state];
    if (cancelling) [word, tone] = ["Cancelling", "muted"];
    else if (reconnecting) [word, tone] = ["Reconnecting", "warning"];
    this.badge.textContent = word;
    this.badge.dataset.tone = tone;
    this.renderButtons(cancelling);

    const hasBars = !["checking", "refused", "missing", "denied"].includes(state);
    if (hasBars && !this.meters.isConnected) this.article.insertBefore(this.meters, this.outcome);
    if (hasBars) {
      this.renderUpload();
      this.renderWork();
    }
    this.renderOutcome();
  }

  renderButtons(cancelling) {
    const focused = this.element.contains(document.activeElement) ? document.activeElement : null;
    this.cancelButton.hidden = !CANCELLABLE.has(this.state);
    this.cancelButton.setAttribute("aria-disabled", String(cancelling));
    this.retryButton.hidden = !(this.state === "upload-failed" && this.retryable && this.file);
    this.dismissButton.hidden = !this.finished;
    if (focused?.hidden) {
      // Keep keyboard users where they were: the button they pressed gave way to another.
      [this.retryButton, this.dismissButton, this.cancelButton].find((b) => !b.hidden)?.focus();
    }
  }

  renderUpload() {
    showUpload(this.uploadMeter, this.state, this.size, this.upload);
  }

  renderWork() {
    showWork(this.workMeter, this.state, this.work, { error: this.error, result: this.result, size: this.size });
  }

  renderOutcome() {
    const state = this.state;
    if (state === "succeeded" && this.result && typeof this.result === "object") {
      if (this.outcomeShows !== "result") {
        this.outcome.replaceChildren(resultFacts(this.result, { name: this.name, size: this.size, page: this.page }));
      }
      this.outcomeShows = "result";
      return;
    }
    let content = null;
    if (state === "checking") {
      const text = this.unreachable ? "Cannot reach the server; trying again…" : "Asking the server how this upload is doing…";
      content = h("p", { class: "note" }, text);
    } else if (state === "failed") {
      content = problem(`Processing failed: ${sentence(this.error || "the worker gave no reason")}`);
    } else if (state === "cancelled") {
      content = h("p", { class: "note" }, "Cancelled: the server stopped processing this file.");
    } else if (state === "upload-cancelled") {
      content = h("p", { class: "note" }, "Cancelled: the file was not processed.");
    } else if (state === "missing" || state === "denied") {
      content = h("p", { class: "note" }, this.problem);
    } else if (this.problem && FINISHED.has(state)) {
      content = problem(this.problem);
    } else if (this.notice) {
      content = problem(this.notice);
    }
    const shows = content ? `${content.className}:${content.textContent}` : "";
    if (shows !== this.outcomeShows) {
      this.outcome.replaceChildren(...(content ? [content] : []));
      this.outcomeShows = shows;
    }
  }

  // ---- the upload ----------------------------------------------------------------------------------

  /** The file is over the limit: it is never sent. */
  refuse(reason) {
    this.state = "refused";
    this.problem = reason;
    this.page.announce(`${this.name} was not uploaded: ${reason}`);
    this.update();
  }

  /** The page has a connection for this card's upload. */
  startUpload() {
    if (this.state !== "waiting" || !this.file) return;
    const apiKey = this.page.apiKey();
    if (apiKey === "") {
      // The server would refuse it: say so now rather than send the whole file to hear it.
      this.state = "upload-failed";
      Object.assign(this.upload, { sent: 0, started: 0, ended: 0 });
      this.problem = "Not sent: this server needs an API key. Enter it above, then retry.";
      this.retryable = true;
      this.page.announce(`${this.name} was not uploaded: enter the API key, then retry.`);
      this.page.keyRefused();
      this.update();
      return;
    }
    this.state = "uploading";
    Object.assign(this.upload, { sent: 0, started: performance.now(), ended: 0, estimate: null });
    this.upload.meter.reset();
    this.transfer = uploadFile("/uploads", this.file, {
      apiKey,
      onProgress: (sent) => {
        this.upload.sent = sent;
        this.upload.meter.add(performance.now() / 1000, sent);
        this.render();
      },
      onSent: () => {
        if (this.state !== "uploading") return;
        this.upload.ended = performance.now();
        this.state = "sent";
        this.render();
      },
    });
    this.transfer.promise.then(
      (job) => this.uploaded(job),
      (error) => this.uploadFailed(error),
    );
    this.update();
  }

  uploaded(job) {
    this.transfer = null;
    this.upload.sent = this.size;
    this.upload.ended ||= performance.now();
    this.jobId = job.id;
    this.token = typeof job.token === "string" && job.token ? job.token : null;
    this.eventsUrl = job.events_url || `/jobs/${encodeURIComponent(job.id)}/events`;
    const saved = { jobId: job.id, name: this.name, size: this.size, batch: this.batch, index: this.index };
    saveUpload(this.token ? { ...saved, token: this.token } : saved);
    this.file = null; // the server has it now
    this.page.announce(`${this.name} uploaded; processing it.`);
    this.applyView(job);
    if (this.cancelWhenUploaded) {
      this.cancelWhenUploaded = false;
      this.cancel();
    }
    this.update();
  }

  uploadFailed(error) {
    this.transfer = null;
    this.cancelWhenUploaded = false;
    if (error?.name === "AbortError") {
      this.state = "upload-cancelled";
      this.page.announce(`Upload of ${this.name} cancelled.`);
    } else {
      this.state = "upload-failed";
      this.problem = `Upload failed: ${sentence(error?.message || "the browser gave no reason")}`;
      this.retryable = Boolean(error?.retryable);
      this.page.announce(`${this.name}: ${this.problem}`);
      if (error?.status === 401) this.page.keyRefused();
    }
    this.update();
  }

  retry() {
    if (this.state !== "upload-failed" || !this.file) return;
    this.state = "waiting";
    this.problem = "";
    this.upload.sent = 0;
    this.update();
  }

  // ---- the job -------------------------------------------------------------------------------------

  /** Brought back from localStorage: ask the server how its job is doing, then follow it. */
  restore() {
    this.schedulePoll(0);
  }

  /** Show a job's state (`GET /jobs/{id}`, the 202 of the upload, a `lost` event's `job`). */
  applyView(view) {
    if (!view || view.last_event_id < this.lastEventId) return; // older than what is shown
    this.lastEventId = view.last_event_id;
    this.unreachable = false;
    const work = this.work;
    this.track(view.attempt, view.progress);
    Object.assign(work, { message: view.message ?? "", current: view.current ?? null, total: view.total ?? null });
    if (view.started_at) work.startedTs = Date.parse(view.started_at) / 1000;
    if (TERMINAL.has(view.status)) {
      if (view.finished_at) work.endedTs = Date.parse(view.finished_at) / 1000;
      this.finish({ status: view.status, error: view.error, result: view.result, ts: work.endedTs });
      return;
    }
    this.state = view.status;
    this.error = view.error ?? "";
    this.update();
  }

  /** A new attempt starts the bar over; within an attempt the bar only moves forward. */
  track(attempt, percent) {
    const work = this.work;
    if (attempt > work.attempt) {
      work.attempt = attempt;
      work.percent = 0;
      work.meter.reset();
      work.estimate = null;
    }
    if (typeof percent === "number") work.percent = Math.max(work.percent, percent);
  }

  /** Watch live (a stream) or not (polling), as the page's connection budget allows. */
  setLive(live) {
    if (!this.wantsStream) return;
    // A card saved before the server had keys has no token for a stream, but the API key reads its state.
    if (!this.token && this.page.apiKey()) live = false;
    if (live && !this.watcher) {
      this.stopPolling();
      this.watcher = watchJob(this.eventsUrl, {
        token: this.token,
        lastEventId: this.lastEventId,
        onProgress: (event) => this.progressed(event),
        onStatus: (event) => this.statusChanged(event),
        onDone: (event) => this.finish(event),
        onLost: (event) => this.applyView(event.job),
        onConnection: (state) => {
          this.connection = state;
          this.render();
        },
        onError: (error) => (error?.status === 401 || error?.status === 403 ? this.denied() : this.gone()),
      });
    } else if (!live && this.watcher) {
      this.lastEventId = Math.max(this.lastEventId, this.watcher.lastEventId);
      this.watcher.close();
      this.watcher = null;
      this.connection = null;
      this.schedulePoll(0);
    } else if (!live && !this.pollTimer && !this.polling) {
      this.schedulePoll(POLL_MS);
    }
  }

  progressed(event) {
    if (!ACTIVE.has(this.state)) return;
    const work = this.work;
    this.track(work.attempt, event.progress);
    work.message = event.message ?? "";
    work.current = event.current ?? null;
    work.total = event.total ?? null;
    if (work.current !== null) work.meter.add(event.ts, work.current);
    this.render();
  }

  statusChanged(event) {
    if (TERMINAL.has(event.status) || !ACTIVE.has(this.state)) return; // onDone has the terminal one
    this.track(event.attempt);
    if (event.status === "running") this.work.startedTs ??= event.ts;
    const before = this.state;
    this.state = event.status;
    this.error = event.error ?? "";
    if (before !== this.state && this.state === "retrying") {
      this.page.announce(`${this.name}: interrupted; it will be tried again.`);
    }
    this.update();
  }

  finish(event) {
    if (this.finished) return;
    this.stopWatching();
    this.state = event.status;
    this.error = event.error ?? "";
    this.result = event.result ?? null;
    if (event.ts) this.work.endedTs = event.ts;
    if (event.status === "succeeded") this.work.percent = 100;
    this.cancelling = false;
    this.notice = "";
    this.connection = null;
    if (event.status === "succeeded") this.page.announce(`${this.name}: done.`);
    else if (event.status === "failed") this.page.announce(`${this.name}: processing failed. ${sentence(this.error)}`);
    else this.page.announce(`${this.name}: cancelled.`);
    this.update();
  }

  /** The server does not know the job (any more). */
  gone() {
    if (this.finished) return;
    this.stopWatching();
    this.state = "missing";
    this.problem =
      "The server no longer has this job. Finished jobs are kept for a while and then removed, so its progress and result are gone.";
    this.page.announce(`${this.name}: the server no longer has this job.`);
    this.update();
  }

  /** The server will not show the job: its token expired, or the server's secret changed. */
  denied() {
    if (this.finished) return;
    this.stopWatching();
    this.state = "denied";
    this.problem = this.token
      ? "The server no longer lets this page see this job: its access token has expired or is not accepted, so its progress and result cannot be shown."
      : "The server now needs an API key to show this job: enter it above, then reload the page.";
    this.page.announce(`${this.name}: the server no longer lets this page see this job.`);
    this.update();
  }

  /** Headers that let this card read its job: its token, else the API key (a card saved without one). */
  readHeaders() {
    const headers = { Accept: "application/json" };
    const credential = this.token || this.page.apiKey();
    if (credential) headers.Authorization = `Bearer ${credential}`;
    return headers;
  }

  schedulePoll(delay) {
    clearTimeout(this.pollTimer);
    this.pollTimer = setTimeout(() => this.poll(), delay);
  }

  stopPolling() {
    clearTimeout(this.pollTimer);
    this.pollTimer = null;
  }

  stopWatching() {
    this.watcher?.close();
    this.watcher = null;
    this.stopPolling();
  }

  async poll() {
    this.pollTimer = null;
    if (this.watcher || !(this.state === "checking" || ACTIVE.has(this.state))) return;
    this.polling = true;
    let view = null;
    let status = 0;
    try {
      const response = await fetch(`/jobs/${encodeURIComponent(this.jobId)}`, {
        headers: this.readHeaders(),
        cache: "no-store",
      });
      status = response.status;
      if (response.ok) view = await response.json();
    } catch {
      // the server is unreachable: below
    } finally {
      this.polling = false;
    }
    // A stream may have taken over meanwhile; its events are newer than this answer.
    if (this.watcher || !(this.state === "checking" || ACTIVE.has(this.state))) return;
    if (status === 404) {
      this.gone();
      return;
    }
    if (status === 401 || status === 403) {
      this.denied();
      return;
    }
    if (!view) {
      this.unreachable = true;
      this.render();
      this.schedulePoll(this.pollDelay);
      this.pollDelay = Math.min(this.pollDelay * 2, MAX_POLL_MS);
      return;
    }
    this.pollDelay = POLL_MS;
    this.applyView(view);
    if (this.wantsStream && !this.watcher && !this.pollTimer) this.schedulePoll(POLL_MS);
  }

  // ---- the buttons ---------------------------------------------------------------------------------

  async cancel() {
    switch (this.state) {
      case "waiting":
        this.state = "upload-cancelled";
        this.page.announce(`Upload of ${this.name} cancelled.`);
        this.update();
        return;
      case "uploading":
        this.transfer?.abort();
        return;
      case "sent":
        // The server has the whole file and is about to answer with its job: cancel that job then.
        this.cancelWhenUploaded = true;
        this.render();
        return;
      default:
    }
    if (!ACTIVE.has(this.state) || this.cancelling) return;
    const apiKey = this.page.apiKey();
    if (apiKey === "") {
      this.notice = `Could not cancel: ${KEY_NEEDED_TO_CANCEL}`;
      this.page.keyRefused();
      this.render();
      return;
    }
    this.cancelling = true;
    this.notice = "";
    this.render();
    let response = null;
    let body = null;
    const headers = { Accept: "application/json" };
    if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
    try {
      response = await fetch(`/jobs/${encodeURIComponent(this.jobId)}`, { method: "DELETE", headers });
      body = await response.json().catch(() => null);
    } catch {
      // below
    }
    this.cancelling = false;
    if (this.finished) return; // the stream said how it ended meanwhile
    if (response?.ok) {
      this.applyView(body);
    } else if (response?.status === 404) {
      this.gone();
    } else if (response?.status === 409) {
      if (!this.watcher) this.schedulePoll(0); // it has just finished: fetch how
      this.render();
    } else if (response?.status === 401 || response?.status === 403) {
      this.notice = `Could not cancel: ${KEY_NEEDED_TO_CANCEL}`;
      this.page.keyRefused();
      this.render();
    } else {
      const reason = response ? detailText(body) || `the server answered ${response.status}` : "the server did not answer";
      this.notice = `Could not cancel: ${sentence(reason)} Try again.`;
      this.render();
    }
  }

  dismiss() {
    if (!this.finished) return;
    this.stopWatching();
    if (this.jobId) forgetUpload(this.jobId);
    this.page.remove(this);
  }

  /** Redraw, and tell the page (which may start uploads and streams, and counts cards). */
  update() {
    this.render();
    this.page.changed();
  }
}

function problem(text) {
  return h("p", { class: "problem" }, text);
}
