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

// A size in words: "0 MB" for a 300 kB limit told the user nothing could be sent.
function sizeText(bytes) {
  const mb = bytes / 1048576;
  if (mb >= 10) return `${Math.round(mb)} MB`;
  if (mb >= 1) return `${Number(mb.toFixed(1))} MB`;
  return `${Math.max(1, Math.round(bytes / 1024))} kB`;
}

async function loadModelInfo() {
  const line = $("#model-line");
  let response;
  try {
    response = await fetch("/v1/models");
  } catch (error) {
    // A sentence, not "TypeError: Failed to fetch".
    line.textContent = "Model information unavailable: could not reach the server; reload the page to try again.";
    return;
  }
  const info = await response.json().catch(() => null);
  if (!response.ok || !info || !info.loaded || !info.limits) {
    line.textContent = `Model information unavailable: ${errorMessage(info, response)}.`;
    return;
  }
  maxFiles = info.limits.max_files || maxFiles;
  maxBodyBytes = info.limits.max_body_bytes || maxBodyBytes;
  const loaded = info.loaded;
  line.textContent =
    `Model: ${loaded.name} ${loaded.version || ""} (${loaded.kind}). ` +
    `Up to ${info.limits.max_files} images per request, ${sizeText(info.limits.max_file_bytes)} each.`;
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
  const status = `${response.status} ${response.statusText}`.trim();
  // A bare "200 OK" read as the reason a file failed; say what went wrong instead.
  return response.ok ? `the server's answer (${status}) could not be read; try again`
    : `the server answered ${status}`;
}

// The text with each occurrence of a file's name in its own <bdi>: a name holding a right-to-left override
// (U+202E, as in "photo\u202Egnp.exe") otherwise reverses the rest of the line, the reason included.
function textNodes(text, name) {
  const parts = name ? String(text).split(name) : [String(text)];
  const nodes = [];
  parts.forEach((part, i) => {
    if (i) {
      const bdi = document.createElement("bdi");
      bdi.textContent = name;
      nodes.push(bdi);
    }
    if (part) nodes.push(document.createTextNode(part));
  });
  return nodes;
}

function createCard(file) {
  const node = $("#result-template").content.firstElementChild.cloneNode(true);
  const card = { node, file, objectUrl: URL.createObjectURL(file), heatmapUrl: null, showing: false };
  $(".file-name", node).textContent = file.name;
  const thumb = $(".thumb", node);
  thumb.src = card.objectUrl;
  thumb.alt = `Uploaded image ${file.name}`;
  // A file the browser cannot show either gets a text placeholder, not a broken-image icon (TIFF, HEIC, ...).
  // The server may still judge it, and its heatmap is a PNG the browser can show: see toggleHeatmap.
  thumb.addEventListener("error", () => {
    if (!card.showing) {
      card.noPreview = true;
      thumb.hidden = true;
      $(".map-caption", node).textContent = NO_PREVIEW;
    }
  });
  const toggle = $(".heatmap-toggle", node);
  toggle.hidden = true;
  toggle.addEventListener("click", () => toggleHeatmap(card));
  return card;
}

const NO_PREVIEW = "No preview: the browser cannot display this file.";

// A list item of plain text (never HTML), the file's name isolated as in textNodes().
function listItem(text, className, name) {
  const li = document.createElement("li");
  li.replaceChildren(...textNodes(text, name));
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
    $(".reasons", node).replaceChildren(listItem(verdict.error, null, card.file.name));
    // Not "could not be read as an image": a timeout, a busy or unreachable server fail a good image too.
    $(".evidence", node).replaceChildren(listItem("Not examined: this file got no verdict (see why above).", "hint"));
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
  const name = card.file.name;
  $(".reasons", node).replaceChildren(...(verdict.reasons || []).map((r) => listItem(r, null, name)));
  const evidence = (verdict.evidence || []).map((e) =>
    listItem(`${e.kind}: ${e.detail} (${e.signal}, ${e.strength})`, `signal-${e.signal}`, name));
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
  if (card.busy) return;
  if (!card.heatmapUrl) {
    // aria-disabled, not disabled: disabling the focused button sent keyboard focus back to the top of the page.
    card.busy = true;
    toggle.setAttribute("aria-disabled", "true");
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
      card.busy = false;
      toggle.removeAttribute("aria-disabled");
    }
  }
  card.showing = !card.showing;
  thumb.src = card.showing ? card.heatmapUrl : card.objectUrl;
  thumb.alt = card.showing ? `Heatmap over ${card.file.name}` : `Uploaded image ${card.file.name}`;
  // The heatmap shows even where the original could not (it stayed hidden, and the button seemed to do nothing).
  thumb.hidden = !card.showing && Boolean(card.noPreview);
  toggle.setAttribute("aria-pressed", String(card.showing));
  toggle.textContent = card.showing ? "Show original" : "Show heatmap";
  if (card.showing) {
    caption.replaceChildren(...textNodes(`${MAP_TEXT[card.mapKind] || card.mapKind}. ${card.mapNotes}`.trim(),
      card.file.name));
  } else {
    caption.textContent = card.noPreview ? NO_PREVIEW : "";
  }
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
    // One verdict per file, in order; a file the answer left out must not stay "judging..." for ever.
    cards.forEach((card, i) => showVerdict(card, body.verdicts[i] ||
      { error: `${card.file.name}: the server sent no verdict for this file; try again` }));
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

// The cards of every choice not yet fully judged: files chosen while others are still being judged join them, so
// the status counts all and says "Checked" only when none is left (a first choice that finished said
// "Checked 1 image." while a second was still judging).
let running = [];

function imagesText(count) {
  return `${count} image${count === 1 ? "" : "s"}`;
}

function showProgress() {
  if (!running.length) return;  // another choice's last answer has already said "Checked"
  const done = running.filter((card) => card.verdict).length;
  if (done < running.length) {
    setStatus(`Checking ${imagesText(running.length)}\u2026` + (done ? ` ${done} done.` : ""));
    return;
  }
  const failed = running.filter((card) => card.verdict.error).length;
  setStatus(`Checked ${imagesText(running.length)}` + (failed ? `; ${failed} could not be judged.` : "."));
  running = [];
}

async function handleFiles(fileList) {
  const files = Array.from(fileList);
  if (!files.length) return;
  const cards = files.map(createCard);
  running.push(...cards);
  showProgress();
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
    } else {
      try {
        await judgeBatch(batch);
      } catch (error) {
        // A fault in one answer (say, a verdict the page cannot show) must not stop the batches after it.
        batch.filter((card) => !card.verdict).forEach((card) => showVerdict(card, {
          error: `${card.file.name}: the page could not show this result (${error})`,
        }));
      }
    }
    showProgress();
  }
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
  // A drop anywhere on the page is judged (one outside the zone was dropped without a word), and never navigates
  // away from the page; a drop with no file in it says so.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => {
    event.preventDefault();
    const files = event.dataTransfer ? event.dataTransfer.files : [];
    if (files.length) {
      handleFiles(files);
    } else {
      setStatus("Nothing to check: only files can be dropped. A picture dragged from a web page arrives as " +
        "a link or text; save it to your computer first, then drop or choose the file.");
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setUpDropzone();
  loadModelInfo();
});
