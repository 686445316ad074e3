/**
 * The uploads this browser has handed to the server, kept in localStorage so that a reload (or a crash)
 * brings their cards back: only what the page cannot ask the server for (its job id, and on a server
 * with API keys the job's read token, are enough for the rest).
 *
 * @module saved
 */

const KEY = "jobpulse.uploads";
const KEPT = 100; // the newest; older cards are forgotten rather than asked about on every load

/**
 * @typedef {object} SavedUpload
 * @property {string} jobId
 * @property {string} name The file's name.
 * @property {number} size Bytes.
 * @property {number} batch When its batch of files was picked (ms since the epoch); newest batch on top.
 * @property {number} index Its place in the batch.
 * @property {string} [token] The job's read token, when the server has API keys: without it the card
 *   could not follow its job after a reload. (The API key itself is never kept here.)
 */

/** @returns {SavedUpload[]} newest batch first, each batch in the order its files were picked */
export function savedUploads() {
  let entries;
  try {
    entries = JSON.parse(localStorage.getItem(KEY) ?? "[]");
  } catch {
    return [];
  }
  if (!Array.isArray(entries)) return [];
  return entries
    .filter((e) => e && typeof e.jobId === "string" && typeof e.name === "string")
    .sort((a, b) => (b.batch ?? 0) - (a.batch ?? 0) || (a.index ?? 0) - (b.index ?? 0));
}

/** @param {SavedUpload} entry */
export function saveUpload(entry) {
  write([entry, ...savedUploads().filter((e) => e.jobId !== entry.jobId)].slice(0, KEPT));
}

/** @param {string} jobId */
export function forgetUpload(jobId) {
  write(savedUploads().filter((e) => e.jobId !== jobId));
}

function write(entries) {
  try {
    localStorage.setItem(KEY, JSON.stringify(entries));
  } catch {
    // storage full or disabled: the page works, it just will not remember these after a reload
  }
}
