/**
 * What a finished job found out about a file, as a card shows it: size, type, lines, the CSV's rows and
 * columns or the image's dimensions, and the SHA-256 with a button that copies it.
 *
 * @module result
 */

import { h } from "./element.js";
import { formatBytes, formatCount } from "./format.js";

/**
 * The result as a list of facts.
 * @param {object} result the job's result
 * @param {{name: string, size: number, page: {announce: (text: string) => void}}} file the uploaded file's
 *   name, its size (shown when the result has none) and the page that announces a copy
 */
export function resultFacts(result, { name, size: uploadedSize, page }) {
  const list = h("dl", { class: "facts" });
  const add = (term, ...value) => list.append(h("div", { class: "fact" }, h("dt", {}, term), h("dd", {}, ...value)));
  const size = typeof result.size === "number" ? result.size : uploadedSize;
  add("Size", size < 1000 ? formatBytes(size) : `${formatBytes(size)} (${formatCount(size)} bytes)`);
  if (result.content_type) add("Type", result.content_type);
  const image = result.image;
  if (image && typeof image === "object") {
    const mode = image.mode ? `, ${image.mode}` : "";
    add("Image", `${image.format ?? "Image"}, ${formatCount(image.width)} × ${formatCount(image.height)} pixels${mode}`);
  }
  const csv = result.csv;
  if (csv && typeof csv === "object") {
    const columns = Array.isArray(csv.columns) ? csv.columns : [];
    const count = typeof csv.column_count === "number" ? csv.column_count : columns.length;
    const more = count > columns.length ? `, and ${formatCount(count - columns.length)} more` : "";
    add("Rows", `${formatCount(csv.rows)} below the header`);
    add("Columns", `${formatCount(count)}${columns.length ? `: ${columns.join(", ")}${more}` : ""}`);
  } else if (!image && typeof result.lines === "number") {
    add("Lines", formatCount(result.lines));
  }
  if (typeof result.sha256 === "string") {
    const code = h("code", { class: "digest" }, result.sha256);
    const copy = h("button", { type: "button", class: "button quiet small" }, "Copy", h("span", { class: "visually-hidden" }, ` SHA-256 of ${name}`));
    copy.addEventListener("click", () => copyDigest(result.sha256, name, page));
    const row = h("div", { class: "fact wide" }, h("dt", {}, "SHA-256"), h("dd", {}, code, copy));
    list.append(row);
  }
  return list;
}

async function copyDigest(text, name, page) {
  try {
    await navigator.clipboard.writeText(text);
    page.announce(`SHA-256 of ${name} copied.`);
  } catch {
    page.announce("Could not copy: select the SHA-256 and copy it by hand.");
  }
}
