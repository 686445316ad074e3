/**
 * Numbers in words for the upload page: sizes, counts, durations, and the rate meter behind
 * "4.2 MB/s · about 12 s left".
 *
 * Sizes are decimal (1 MB = 1,000,000 bytes), as the worker's messages are.
 *
 * @module format
 */

const UNITS = ["kB", "MB", "GB", "TB"];
const COUNT = new Intl.NumberFormat("en");

/**
 * "812 bytes", "6.3 MB". With `trim`, a whole number loses its ".0" ("1 GB"), for limits.
 * @param {number} bytes
 * @param {{trim?: boolean}} [options]
 */
export function formatBytes(bytes, { trim = false } = {}) {
  if (!Number.isFinite(bytes) || bytes < 0) return "an unknown size";
  if (bytes < 1000) return `${Math.round(bytes)} ${Math.round(bytes) === 1 ? "byte" : "bytes"}`;
  let value = bytes / 1000;
  let unit = 0;
  while (unit < UNITS.length - 1 && Number(value.toFixed(1)) >= 1000) {
    value /= 1000;
    unit += 1;
  }
  let text = value.toFixed(1);
  if (trim) text = text.replace(/\.0$/, "");
  return `${text} ${UNITS[unit]}`;
}

/** "1,204" */
export function formatCount(n) {
  return COUNT.format(n);
}

/** "4.2 MB/s" */
export function formatRate(bytesPerSecond) {
  return `${formatBytes(bytesPerSecond)}/s`;
}

/** A percentage as a bar's figure: whole percents, rounded down, so 100% means done. */
export function formatPercent(percent) {
  return `${Math.floor(Math.min(100, Math.max(0, percent)))}%`;
}

/** "0.4 s", "12 s", "3 min 5 s", "1 h 20 min". */
export function formatDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "";
  if (seconds < 9.95) return `${Math.max(0.1, seconds).toFixed(1)} s`;
  const whole = Math.round(seconds);
  if (whole < 60) return `${whole} s`;
  const minutes = Math.floor(whole / 60);
  if (minutes < 60) {
    const rest = whole - minutes * 60;
    return minutes < 10 && rest ? `${minutes} min ${rest} s` : `${minutes} min`;
  }
  const hours = Math.floor(minutes / 60);
  const rest = minutes - hours * 60;
  return rest ? `${hours} h ${rest} min` : `${hours} h`;
}

/** "about 12 s left", "almost done". */
export function formatRemaining(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "";
  if (seconds < 1) return "almost done";
  return `about ${formatDuration(Math.ceil(seconds))} left`;
}

/**
 * The rate of a growing count (bytes sent, bytes processed) over a sliding window of samples.
 */
export class RateMeter {
  /** @param {number} [windowSeconds] how much recent history the rate is worked out from */
  constructor(windowSeconds = 3) {
    this.windowSeconds = windowSeconds;
    /** @type {Array<[number, number]>} (seconds, count) */
    this.samples = [];
  }

  /** Record `count` at time `seconds`; a count that went down (a job's new attempt) starts over. */
  add(seconds, count) {
    if (!Number.isFinite(seconds) || !Number.isFinite(count)) return;
    const last = this.samples.at(-1);
    if (last && (count < last[1] || seconds < last[0])) this.samples = [];
    this.samples.push([seconds, count]);
    while (this.samples.length > 2 && seconds - this.samples[1][0] >= this.windowSeconds) this.samples.shift();
  }

  /** Units per second, or null while there is too little history to say. */
  rate() {
    if (this.samples.length < 2) return null;
    const [t0, c0] = this.samples[0];
    const [t1, c1] = this.samples.at(-1);
    if (t1 - t0 < 0.25) return null;
    return (c1 - c0) / (t1 - t0);
  }

  reset() {
    this.samples = [];
  }
}
