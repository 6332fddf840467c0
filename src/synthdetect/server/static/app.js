// synthdetect web page: upload images, show each verdict, p_ai gauge, reasons, evidence and a heatmap toggle.
// Plain JavaScript with no dependencies, so the page works offline and needs no build step.
"use strict";

const LABEL_TEXT = { ai: "AI-generated", human: "Human-made", uncertain: "Uncertain" };
const MAP_TEXT = {
  gradcam: "Grad-CAM: brighter regions pushed the model toward its answer",
  occlusion: "Occlusion: red regions raise p_ai, blue regions lower it",
  ela: "Error-level analysis: bright regions recompress differently",
};
// The server's limits until /v1/models says otherwise (its defaults).
let maxFiles = 16;
let maxBodyBytes = 64 * 1048576;
// Multipart framing per file (boundary, part headers) besides its bytes and name; generous on purpose.
const PART_OVERHEAD_BYTES = 1024;
// Requests aim at this size, though the server takes up to its body limit: 12 phone photos of 5 MB in one request
// took longer than the server's 30 s timeout for the default model on a busy 2-core machine, and no result showed
// until the whole request ended. Large photos now go about one per request, small images still many at once.
const REQUEST_TARGET_BYTES = 8 * 1048576;

const $ = (selector, root = document) => root.querySelector(selector);

function setStatus(text) {
  $("#status").textContent = text;
}

async function loadModelInfo() {
  try {
    const response = await fetch("/v1/models");
    const info = await response.json();
    maxFiles = info.limits.max_files;
    maxBodyBytes = info.limits.max_body_bytes;
    const loaded = info.loaded;
    $("#model-line").textContent =
      `Model: ${loaded.name} ${loaded.version || ""} (${loaded.kind}). ` +
      `Up to ${info.limits.max_files} images per request, ${Math.round(info.limits.max_file_bytes / 1048576)} MB each.`;
  } catch (error) {
    $("#model-line").textContent = "Model information unavailable: " + error;
  }
}

// fetch() rejects with a bare "TypeError: Failed to fetch" when the server stopped or the connection dropped,
// and also when the browser cannot read one of the files it sends: a dropped folder, or a file moved, changed
// or deleted since it was chosen. Then the whole request fails, so the page asks /healthz which it was.
const UNREACHABLE = "could not reach the server (it may have stopped, or the connection dropped); try again";
const UNREADABLE = "the browser could not read this file (a folder, or a file moved, changed or deleted " +
  "since it was chosen)";
// A busy server (503) says when to come back in Retry-After; the page waits and resends this many times.
const BUSY_RETRIES = 5;
const MAX_RETRY_WAIT_S = 10;

const sleep = (seconds) => new Promise((resolve) => setTimeout(resolve, seconds * 1000));

async function serverAnswers() {
  try {
    await fetch("/healthz", { cache: "no-store" });
    return true;
  } catch (error) {
    return false;
  }
}

// POST the form, resending it while the server answers 503 busy, after the seconds it asks for; say() tells why.
async function postWithRetries(url, form, say) {
  for (let attempt = 0; ; attempt++) {
    const response = await fetch(url, { method: "POST", body: form });
    if (response.status !== 503 || attempt >= BUSY_RETRIES) return response;
    const wait = Number.parseFloat(response.headers.get("retry-after"));
    say(`Server busy; trying again (${attempt + 1} of ${BUSY_RETRIES})\u2026`);
    await sleep(Number.isFinite(wait) ? Math.min(Math.max(wait, 0), MAX_RETRY_WAIT_S) : 1);
  }
}

function errorMessage(body, response) {
  if (body && body.error && body.error.message) return body.error.message;
  return `${response.status} ${response.statusText}`;
}

function createCard(file) {
  const node = $("#result-template").content.firstElementChild.cloneNode(true);
  const card = { node, file, objectUrl: URL.createObjectURL(file), heatmapUrl: null, showing: false };
  $(".file-name", node).textContent = file.name;
  const thumb = $(".thumb", node);
  thumb.src = card.objectUrl;
  thumb.alt = `Uploaded image ${file.name}`;
  // A file the browser cannot show either gets a text placeholder, not a broken-image icon.
  thumb.addEventListener("error", () => {
    if (!card.showing) {
      thumb.hidden = true;
      $(".map-caption", node).textContent = "No preview: the browser cannot display this file.";
    }
  });
  const toggle = $(".heatmap-toggle", node);
  toggle.hidden = true;
  toggle.addEventListener("click", () => toggleHeatmap(card));
  return card;
}

function listItem(text, className) {
  const li = document.createElement("li");
  li.textContent = text;
  if (className) li.className = className;
  return li;
}

function showVerdict(card, verdict) {
  const node = card.node;
  card.verdict = verdict;
  const badge = $(".label-badge", node);
  if (verdict.error) {
    badge.textContent = "Could not judge";
    badge.dataset.label = "error";
    node.dataset.label = "error";
    $(".reasons", node).replaceChildren(listItem(verdict.error));
    $(".evidence", node).replaceChildren(listItem("Not examined: the file could not be read as an image.", "hint"));
    return;
  }
  badge.textContent = LABEL_TEXT[verdict.label] || verdict.label;
  badge.dataset.label = verdict.label;
  node.dataset.label = verdict.label;
  const gauge = $(".gauge", node);
  if (verdict.p_ai !== null && verdict.p_ai !== undefined) {
    const percent = Math.round(verdict.p_ai * 1000) / 10;
    gauge.hidden = false;
    gauge.setAttribute("aria-valuenow", String(percent));
    gauge.setAttribute("aria-valuetext", `p_ai ${verdict.p_ai.toFixed(3)}: ${percent}% probability of AI`);
    gauge.setAttribute("aria-label", "Probability that the image is AI-generated");
    $(".gauge-marker", node).style.left = `${percent}%`;
    $(".gauge-marker", node).dataset.value = verdict.p_ai.toFixed(3);
    badge.textContent += ` \u00b7 p_ai ${verdict.p_ai.toFixed(3)}`;
  }
  $(".reasons", node).replaceChildren(...verdict.reasons.map((r) => listItem(r)));
  const evidence = verdict.evidence.map((e) =>
    listItem(`${e.kind}: ${e.detail} (${e.signal}, ${e.strength})`, `signal-${e.signal}`));
  if (!evidence.length) {
    evidence.push(listItem("No provenance or metadata evidence found. Its absence is not evidence of AI.", "hint"));
  }
  $(".evidence", node).replaceChildren(...evidence);
  const toggle = $(".heatmap-toggle", node);
  toggle.hidden = false;
}

async function toggleHeatmap(card) {
  const node = card.node;
  const toggle = $(".heatmap-toggle", node);
  const caption = $(".map-caption", node);
  const thumb = $(".thumb", node);
  if (!card.heatmapUrl) {
    toggle.disabled = true;
    caption.textContent = "Computing heatmap\u2026";
    const form = new FormData();
    form.append("files", card.file, card.file.name);
    try {
      const response = await postWithRetries("/v1/explain?map=auto", form, (text) => {
        caption.textContent = text;
      });
      if (!response.ok) {
        const body = await response.json().catch(() => null);
        caption.textContent = "No heatmap: " + errorMessage(body, response);
        return;
      }
      card.heatmapUrl = URL.createObjectURL(await response.blob());
      card.mapKind = response.headers.get("x-synthdetect-map");
      // Notes that repeat a reason already listed under "Why" are left out of the caption.
      const reasons = (card.verdict && card.verdict.reasons) || [];
      // The -utf8 header is the notes whole (percent-encoded UTF-8); the plain one shows non-ASCII text as "?".
      const encodedNotes = response.headers.get("x-synthdetect-notes-utf8");
      const notes = encodedNotes === null ? response.headers.get("x-synthdetect-notes") || ""
        : decodeURIComponent(encodedNotes);
      card.mapNotes = notes.split(" | ")
        .filter((note) => note && !reasons.some((r) => note.includes(r))).join("; ");
    } catch (error) {
      caption.textContent = "No heatmap: " + ((await serverAnswers()) ? UNREADABLE : UNREACHABLE);
      return;
    } finally {
      toggle.disabled = false;
    }
  }
  card.showing = !card.showing;
  thumb.src = card.showing ? card.heatmapUrl : card.objectUrl;
  thumb.alt = card.showing ? `Heatmap over ${card.file.name}` : `Uploaded image ${card.file.name}`;
  toggle.setAttribute("aria-pressed", String(card.showing));
  toggle.textContent = card.showing ? "Show original" : "Show heatmap";
  caption.textContent = card.showing ? `${MAP_TEXT[card.mapKind] || card.mapKind}. ${card.mapNotes}`.trim() : "";
}

async function judgeBatch(cards) {
  const form = new FormData();
  for (const card of cards) form.append("files", card.file, card.file.name);
  let response;
  let body = null;
  try {
    response = await postWithRetries("/v1/detect", form, setStatus);
    body = await response.json().catch(() => null);
  } catch (error) {
    if (!(await serverAnswers())) {
      cards.forEach((card) => showVerdict(card, { error: UNREACHABLE }));
    } else if (cards.length === 1) {
      showVerdict(cards[0], { error: `${cards[0].file.name}: ${UNREADABLE}` });
    } else {
      // One unreadable file failed the whole request: each file alone, so only the unreadable ones fail.
      for (const card of cards) await judgeBatch([card]);
    }
    return;
  }
  if (body && Array.isArray(body.verdicts)) {
    body.verdicts.forEach((verdict, i) => showVerdict(cards[i], verdict));
  } else {
    const message = errorMessage(body, response);
    cards.forEach((card) => showVerdict(card, { error: message }));
  }
}

// Requests of at most maxFiles files and maxBytes of body, in order: by count alone, 16 phone photos of 5 MB
// each would make one 80 MB body and all fail with 413. Returns arrays of indices into files; a file too big
// for any request gets a batch of its own, and requestBytes() tells the caller so.
function planBatches(files, maxFiles, maxBytes) {
  const batches = [];
  let batch = [];
  let bytes = PART_OVERHEAD_BYTES;  // the closing boundary
  files.forEach((file, i) => {
    const cost = partBytes(file);
    if (batch.length && (batch.length >= maxFiles || bytes + cost > maxBytes)) {
      batches.push(batch);
      batch = [];
      bytes = PART_OVERHEAD_BYTES;
    }
    batch.push(i);
    bytes += cost;
  });
  if (batch.length) batches.push(batch);
  return batches;
}

function partBytes(file) {
  return file.size + PART_OVERHEAD_BYTES + 3 * file.name.length;  // a name's UTF-8 is at most 3 bytes per unit
}

function requestBytes(files) {
  return files.reduce((sum, file) => sum + partBytes(file), PART_OVERHEAD_BYTES);
}

async function handleFiles(fileList) {
  const files = Array.from(fileList);
  if (!files.length) return;
  setStatus(`Checking ${files.length} image${files.length > 1 ? "s" : ""}\u2026`);
  const cards = files.map(createCard);
  // Newest batch first, in the order the files were chosen.
  $("#results").prepend(...cards.map((card) => card.node));
  $("#empty").hidden = true;
  for (const indices of planBatches(files, maxFiles, Math.min(maxBodyBytes, REQUEST_TARGET_BYTES))) {
    const batch = indices.map((i) => cards[i]);
    if (requestBytes(batch.map((card) => card.file)) > maxBodyBytes) {
      // Not sent: the server would refuse it unread, and a browser often reports that as a bare network error.
      const limit = (maxBodyBytes / 1048576).toFixed(1);
      batch.forEach((card) => showVerdict(card, {
        error: `${card.file.name}: file too large (${card.file.size.toLocaleString("en")} bytes; ` +
          `this server takes at most ${limit} MB per request)`,
      }));
      continue;
    }
    await judgeBatch(batch);
    const done = cards.filter((card) => card.verdict).length;
    if (done < files.length) setStatus(`Checking ${files.length} images\u2026 ${done} done.`);
  }
  const failed = cards.filter((card) => !card.verdict || card.verdict.error).length;
  setStatus(`Checked ${files.length} image${files.length > 1 ? "s" : ""}` +
    (failed ? `; ${failed} could not be judged.` : "."));
}

function setUpDropzone() {
  const zone = $("#dropzone");
  const input = $("#file-input");
  input.addEventListener("change", () => {
    handleFiles(input.files);
    input.value = "";
  });
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    zone.addEventListener(type, () => zone.classList.remove("dragging"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    handleFiles(event.dataTransfer.files);
  });
  // Dropping outside the zone must not navigate away from the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
}

document.addEventListener("DOMContentLoaded", () => {
  setUpDropzone();
  loadModelInfo();
});
