/**
 * Sending one file to `POST /uploads` with XMLHttpRequest, whose `upload.onprogress` reports the bytes
 * sent (fetch cannot), and turning the server's refusals into sentences.
 *
 * @module upload
 */

/** An upload the server refused or the network lost; `message` says what happened in words. */
export class UploadError extends Error {
  /**
   * @param {string} message
   * @param {{status?: number, retryable?: boolean}} [details]
   */
  constructor(message, { status = 0, retryable = false } = {}) {
    super(message);
    this.name = "UploadError";
    this.status = status;
    this.retryable = retryable;
  }
}

/**
 * Upload `file` as the multipart part `file`.
 *
 * `promise` resolves with the job (the 202 answer's JSON) and rejects with an `UploadError`, or with a
 * DOMException named "AbortError" after `abort()`.
 *
 * @param {string} url
 * @param {File} file
 * @param {{onProgress?: (sent: number, total: number) => void, onSent?: () => void, apiKey?: string | null}}
 *   [options] `onProgress` gets the bytes of the file sent so far; `onSent` is called once the whole
 *   request has gone out and only the server's answer is awaited; `apiKey`, when given, is sent as
 *   `Authorization: Bearer KEY`.
 * @returns {{promise: Promise<object>, abort: () => void}}
 */
export function uploadFile(url, file, { onProgress, onSent, apiKey = null } = {}) {
  const xhr = new XMLHttpRequest();
  const promise = new Promise((resolve, reject) => {
    xhr.open("POST", url);
    xhr.setRequestHeader("Accept", "application/json");
    if (apiKey) xhr.setRequestHeader("Authorization", `Bearer ${apiKey}`);
    xhr.upload.onprogress = (event) => {
      // `total` is the multipart body, a little more than the file: report the file's share of it.
      if (event.lengthComputable && event.total > 0) {
        onProgress?.(Math.min(file.size, (event.loaded / event.total) * file.size), file.size);
      }
    };
    xhr.upload.onload = () => {
      onProgress?.(file.size, file.size);
      onSent?.();
    };
    xhr.onload = () => {
      const body = parseJson(xhr.responseText);
      if (xhr.status === 202 && body && typeof body.id === "string") resolve(body);
      else reject(refusal(xhr.status, body, xhr.getResponseHeader("Retry-After")));
    };
    xhr.onerror = () => {
      reject(new UploadError("The connection to the server was lost during the upload.", { retryable: true }));
    };
    xhr.onabort = () => reject(new DOMException("The upload was cancelled.", "AbortError"));
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
  return { promise, abort: () => xhr.abort() };
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/** `{"detail": ...}` in words: a string as it is, a list of validation errors as their messages. */
export function detailText(body) {
  const detail = body?.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((item) => (typeof item?.msg === "string" ? item.msg : ""))
      .filter(Boolean)
      .join(" ");
  }
  return "";
}

/** The sentence for a 401: the page asks for the key again. */
const KEY_REFUSED = "The API key is missing or was not accepted. Check it above, then retry.";

/** "in 12 s" from a `Retry-After` of seconds (or an HTTP date); "in a moment" without one. */
function retryAfterText(header) {
  let seconds = Number(header);
  if (header && !/^\d+$/.test(header.trim())) seconds = (Date.parse(header) - Date.now()) / 1000;
  if (!header || !Number.isFinite(seconds) || seconds < 0) return "in a moment";
  const whole = Math.max(1, Math.ceil(seconds));
  return whole < 120 ? `in ${whole} s` : `in ${Math.ceil(whole / 60)} min`;
}

function refusal(status, body, retryAfter = null) {
  const detail = detailText(body);
  if (status === 401 || status === 403) {
    return new UploadError(KEY_REFUSED, { status, retryable: true });
  }
  if (status === 429) {
    return new UploadError(`Too many uploads in the last minute. Try again ${retryAfterText(retryAfter)}.`, {
      status,
      retryable: true,
    });
  }
  if (status === 413) {
    // The page refuses files over the limit it was told; this one is over the limit the server has now.
    return new UploadError("The file is larger than the server's upload limit.", { status });
  }
  if (status === 503) {
    return new UploadError("The server is busy right now and could not take the file. Try again in a moment.", {
      status,
      retryable: true,
    });
  }
  if (status >= 500 || status === 0) {
    return new UploadError(`The server had a problem with the upload (error ${status}). Try again in a moment.`, {
      status,
      retryable: true,
    });
  }
  const reason = detail || `error ${status}`;
  return new UploadError(`The server did not accept the file: ${reason}`, { status });
}
