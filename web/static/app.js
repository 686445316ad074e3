/**
 * The upload page: the file picker and drop zone, the list of cards, and the connection budget.
 *
 * Browsers open at most six connections to one origin over HTTP/1.1, and every upload and every live
 * event stream holds one for as long as it lasts. So at most three files upload at once, and only as many
 * cards as leave a connection free watch their jobs live; the others poll their job each second and take
 * over a stream as soon as one is free. Over HTTP/2 every stream shares one connection and all go live.
 *
 * A server with API keys says so in the page; then the page asks for a key, keeps it in sessionStorage
 * (this tab only, gone when it closes: never in localStorage with the saved uploads) and sends it with
 * uploads and cancels. Reading a job needs only the job's token, which the cards keep.
 *
 * @module app
 */

import { UploadCard } from "./card.js";
import { formatBytes, formatCount } from "./format.js";
import { savedUploads } from "./saved.js";

const MAX_UPLOADS_AT_ONCE = 3;
const LONG_CONNECTIONS = multiplexed() ? 100 : 5; // of the browser's 6; one stays free for everything else
const ANNOUNCEMENTS_KEPT = 5;
const KEY_STORAGE = "jobpulse.apiKey";

const input = document.getElementById("file-input");
const dropzone = document.getElementById("dropzone");
const list = document.getElementById("cards");
const empty = document.getElementById("empty");
const summary = document.getElementById("summary");
const clearButton = document.getElementById("clear-finished");
const announcer = document.getElementById("announcer");
const keyForm = document.getElementById("api-key-form");
const keyInput = document.getElementById("api-key");
const keyProblem = document.getElementById("api-key-problem");
const maxUploadBytes = readLimit();
let keyRequired = readMeta("jobpulse-auth-required") === "true";

/** @type {Set<UploadCard>} */
const cards = new Set();
let scheduled = false;

const page = {
  announce,
  changed() {
    if (scheduled) return;
    scheduled = true;
    queueMicrotask(() => {
      scheduled = false;
      schedule();
      showCounts();
    });
  },
  /** The API key to send: null when the server needs none, "" when it needs one and none was entered. */
  apiKey() {
    return keyRequired ? keyInput.value.trim() : null;
  },
  /** The server wanted a key and had none, or not this one: ask for it (again). */
  keyRefused() {
    showKeyField();
    const entered = keyInput.value.trim() !== "";
    keyProblem.textContent = entered
      ? "The server did not accept this API key. Check it, then retry."
      : "Enter the API key to upload files.";
    keyProblem.hidden = false;
    keyInput.setAttribute("aria-invalid", "true");
  },
  remove(card) {
    const next = neighbourToFocus(card);
    cards.delete(card);
    card.element.remove();
    next?.focus();
    page.changed();
  },
};

function readMeta(name) {
  return document.querySelector(`meta[name="${name}"]`)?.content ?? "";
}

function readLimit() {
  const content = readMeta("jobpulse-max-upload-bytes");
  const bytes = Number(content);
  return /^\d+$/.test(content) && bytes > 0 ? bytes : null;
}

function multiplexed() {
  const [navigation] = performance.getEntriesByType("navigation");
  return /^h[23]/.test(navigation?.nextHopProtocol ?? "");
}

/** Start waiting uploads while fewer than three run; give live streams to the oldest jobs that fit. */
function schedule() {
  const inOrder = [...cards].sort((a, b) => a.seq - b.seq);
  let uploading = inOrder.filter((card) => card.uploading).length;
  for (const card of inOrder) {
    if (uploading >= MAX_UPLOADS_AT_ONCE) break;
    if (card.state === "waiting") {
      card.startUpload();
      uploading += 1;
    }
  }
  const live = Math.max(1, LONG_CONNECTIONS - uploading);
  inOrder.filter((card) => card.wantsStream).forEach((card, i) => card.setLive(i < live));
}

function showCounts() {
  const all = [...cards];
  const finished = all.filter((card) => card.finished).length;
  const going = all.length - finished;
  const parts = [];
  if (going) parts.push(`${going} in progress`);
  if (finished) parts.push(`${finished} finished`);
  summary.textContent = parts.join(" · ");
  empty.hidden = all.length > 0;
  clearButton.hidden = all.length === 0;
  clearButton.disabled = finished === 0;
}

/** Messages for screen readers, in a polite live region; the cards say the same on screen. */
function announce(text) {
  announcer.append(Object.assign(document.createElement("p"), { textContent: text }));
  while (announcer.childElementCount > ANNOUNCEMENTS_KEPT) announcer.firstElementChild.remove();
}

/** Where focus goes when a card is removed: the next card's button, the previous one's, or the picker. */
function neighbourToFocus(card) {
  if (!card.element.contains(document.activeElement)) return null;
  const item = card.element.nextElementSibling ?? card.element.previousElementSibling;
  return item?.querySelector("button:not([hidden])") ?? input;
}

function addFiles(files, folders = []) {
  const batch = Date.now();
  const anchor = list.firstElementChild; // the newest batch goes on top, in the order it was picked
  [...folders, ...files].forEach((item, index) => {
    const isFolder = typeof item === "string";
    const name = isFolder ? item : item.name;
    const card = new UploadCard({ name, size: isFolder ? 0 : item.size, file: isFolder ? null : item, batch, index }, page);
    cards.add(card);
    list.insertBefore(card.element, anchor);
    if (isFolder) {
      card.refuse("It is a folder. Choose the files inside it instead.");
    } else if (maxUploadBytes && item.size > maxUploadBytes) {
      card.refuse(overTheLimit(item.size));
    }
  });
  page.changed();
}

/** "It is 250 kB, more than the 100 kB limit…", in bytes when both round to the same figure. */
function overTheLimit(size) {
  let [it, limit] = [formatBytes(size, { trim: true }), formatBytes(maxUploadBytes, { trim: true })];
  if (it === limit) [it, limit] = [`${formatCount(size)} bytes`, `${formatCount(maxUploadBytes)} bytes`];
  return `It is ${it}, more than the ${limit} limit for one file, so it was not sent.`;
}

// ---- the API key --------------------------------------------------------------------------------------

function showKeyField() {
  keyRequired = true; // also when a server that had no keys when the page loaded now wants one
  if (keyForm.hidden && !keyInput.value) keyInput.value = readStoredKey();
  keyForm.hidden = false;
}

function readStoredKey() {
  try {
    return sessionStorage.getItem(KEY_STORAGE) ?? "";
  } catch {
    return ""; // storage disabled: the key is asked for on every load
  }
}

function storeKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
  } catch {
    // storage disabled: the key lasts as long as the page
  }
}

keyInput.addEventListener("input", () => {
  storeKey(keyInput.value.trim());
  keyInput.removeAttribute("aria-invalid");
  keyProblem.hidden = true;
  keyProblem.textContent = "";
});

keyForm.addEventListener("submit", (event) => event.preventDefault()); // Enter in the field sends nothing

function restoreSaved() {
  for (const entry of savedUploads()) {
    const card = new UploadCard(entry, page);
    cards.add(card);
    list.append(card.element);
    card.restore();
  }
  page.changed();
}

function clearFinished() {
  const hadFocus = clearButton.contains(document.activeElement);
  for (const card of [...cards]) if (card.finished) card.dismiss();
  if (hadFocus) input.focus();
  announce("Finished uploads cleared.");
}

// ---- picking and dropping files ------------------------------------------------------------------------

input.addEventListener("keydown", (event) => {
  // Space opens the picker by itself; Enter does not in every browser, so it is made to here.
  if (event.key === "Enter" && !event.repeat) {
    event.preventDefault();
    input.click();
  }
});

input.addEventListener("change", () => {
  addFiles(input.files ?? []);
  input.value = ""; // so the same file can be picked again
});

let dragDepth = 0;
document.addEventListener("dragenter", (event) => {
  if (!event.dataTransfer?.types.includes("Files")) return;
  dragDepth += 1;
  dropzone.classList.add("dragging");
});
document.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (dragDepth === 0) dropzone.classList.remove("dragging");
});
document.addEventListener("dragover", (event) => {
  if (!event.dataTransfer?.types.includes("Files")) return;
  event.preventDefault(); // the whole page takes the drop, not the browser (which would open the file)
  event.dataTransfer.dropEffect = "copy";
});
document.addEventListener("drop", (event) => {
  if (!event.dataTransfer?.types.includes("Files")) return;
  event.preventDefault();
  dragDepth = 0;
  dropzone.classList.remove("dragging");
  const files = [];
  const folders = [];
  const items = [...(event.dataTransfer.items ?? [])].filter((item) => item.kind === "file");
  if (items.length) {
    for (const item of items) {
      const entry = item.webkitGetAsEntry?.();
      const file = item.getAsFile();
      if (entry?.isDirectory) folders.push(entry.name);
      else if (file) files.push(file);
    }
  } else {
    files.push(...event.dataTransfer.files);
  }
  addFiles(files, folders);
});

clearButton.addEventListener("click", clearFinished);

window.addEventListener("beforeunload", (event) => {
  // Leaving stops the uploads still under way (jobs already started carry on and come back on reload).
  if ([...cards].some((card) => card.uploading || card.state === "waiting")) event.preventDefault();
});

if (maxUploadBytes) {
  const limit = formatBytes(maxUploadBytes, { trim: true });
  document.getElementById("limit").textContent = `Any kind of file up to ${limit}; several at once if you like.`;
}
if (keyRequired) showKeyField();
restoreSaved();
showCounts();
