/**
 * A card's two progress bars, upload and processing: each a labelled `<progress>`, its figure, and a line
 * of words saying how that part is doing, with its rate and time left ("4.2 MB/s · about 12 s left").
 *
 * @module meters
 */

import { h } from "./element.js";
import { formatBytes, formatDuration, formatPercent, formatRate, formatRemaining } from "./format.js";

const ESTIMATE_EVERY_MS = 1000;

/**
 * A labelled bar: its accessible name is "Upload of photo.png" / "Processing of photo.png".
 * @param {string} key the card's key, which makes the ids unique
 * @param {string} kind "upload" or "processing"
 * @param {string} title the visible label
 * @param {string} name the file's name
 */
export function buildMeter(key, kind, title, name) {
  const id = `${key}-${kind}`;
  const progress = h("progress", { id, max: "100", value: "0", "aria-describedby": `${id}-detail` });
  const figure = h("span", { class: "meter-figure", "aria-hidden": "true" }, "0%");
  const detail = h("p", { class: "meter-detail", id: `${id}-detail` });
  const label = h("label", { for: id }, title, h("span", { class: "visually-hidden" }, ` of ${name}`));
  const root = h("div", { class: "meter", "data-kind": kind }, h("div", { class: "meter-head" }, label, figure), progress, detail);
  return { root, progress, figure, detail };
}

/**
 * Fill the upload bar and say how the upload is doing.
 * @param {{progress: HTMLProgressElement, figure: HTMLElement, detail: HTMLElement}} meter
 * @param {string} state the card's state
 * @param {number} size the file's size in bytes
 * @param {{sent: number, started: number, ended: number, meter: object, estimate: object | null}} upload
 */
export function showUpload({ progress, figure, detail }, state, size, upload) {
  const percent = size > 0 ? (100 * upload.sent) / size : upload.ended ? 100 : 0;
  setBar(progress, figure, percent);
  const sent = `${formatBytes(upload.sent)} of ${formatBytes(size)}`;
  let text;
  switch (state) {
    case "waiting":
      text = "Waiting for other uploads to finish";
      break;
    case "uploading":
      text = [sent, ...estimate(upload, size - upload.sent, performance.now())].join(" · ");
      break;
    case "sent":
      text = `${formatBytes(size)} sent, waiting for the server to confirm`;
      break;
    case "upload-failed":
      text = upload.started ? `Stopped after ${sent}` : "Not sent";
      break;
    case "upload-cancelled":
      text = upload.started ? `Cancelled after ${sent}` : "Cancelled before it started";
      break;
    default: {
      const took = upload.ended && upload.started ? ` in ${formatDuration((upload.ended - upload.started) / 1000)}` : "";
      text = `${formatBytes(size)} sent${took}`;
    }
  }
  detail.textContent = text;
}

/**
 * Fill the processing bar and say how the job is doing.
 * @param {{progress: HTMLProgressElement, figure: HTMLElement, detail: HTMLElement}} meter
 * @param {string} state the card's state
 * @param {{percent: number, message: string, current: number | null, total: number | null,
 *   startedTs: number | null, endedTs: number | null, meter: object, estimate: object | null}} work
 * @param {{error: string, result: object | null, size: number}} job the job's error and result, and the
 *   uploaded file's size (shown when the result has none)
 */
export function showWork({ progress, figure, detail }, state, work, { error, result, size: uploadedSize }) {
  setBar(progress, figure, work.percent);
  let text;
  switch (state) {
    case "waiting":
    case "uploading":
    case "sent":
      text = "Starts once the file is uploaded";
      break;
    case "upload-failed":
    case "upload-cancelled":
      text = "Not started";
      break;
    case "queued":
      text = "Queued, waiting for a worker";
      break;
    case "running": {
      const left = work.total != null && work.current != null ? work.total - work.current : null;
      const parts = [work.message || "Started"];
      if (left !== null && work.meter.samples.length) parts.push(...estimate(work, left, Date.now()));
      text = parts.join(" · ");
      break;
    }
    case "retrying":
      text = error ? `Interrupted (${error}); it will be tried again` : "Interrupted; it will be tried again";
      break;
    case "succeeded": {
      const size = typeof result?.size === "number" ? result.size : uploadedSize;
      const took = work.startedTs && work.endedTs ? ` in ${formatDuration(work.endedTs - work.startedTs)}` : "";
      text = `Processed ${formatBytes(size)}${took}`;
      break;
    }
    case "failed":
      text = `Stopped at ${formatPercent(work.percent)}`;
      break;
    case "cancelled":
      text = `Cancelled at ${formatPercent(work.percent)}`;
      break;
    default:
      text = "";
  }
  detail.textContent = text;
}

/** "4.2 MB/s", "about 12 s left", worked out at most once a second so the words stay still. */
function estimate(part, remaining, nowMs) {
  if (part.estimate && nowMs - part.estimate.at < ESTIMATE_EVERY_MS) return part.estimate.words;
  const rate = part.meter.rate();
  const words = rate && rate > 0 ? [formatRate(rate), formatRemaining(remaining / rate)] : [];
  part.estimate = { at: nowMs, words };
  return words;
}

function setBar(progress, figure, percent) {
  const value = Math.min(100, Math.max(0, percent));
  if (progress.value !== value) progress.value = value;
  figure.textContent = formatPercent(value);
}
