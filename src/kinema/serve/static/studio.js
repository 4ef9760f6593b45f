// kinema studio: a page over the same /v1/videos API the openai client uses. No build step.
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

const state = {
  mode: "text",          // text | storyboard | image | edit | extend | loop | connect | remix
  source: null,          // {id, prompt}: the gallery video a remix or an extension starts from
  aspect: "1:1",
  multiple: 8,  // sizes are multiples of this (/healthz says the model's)
  current: null,         // id of the video shown in the player
  polling: null,
  nextPage: null,
  blobs: new Map(),      // object URLs we made, revoked when replaced
};

// ---------------------------------------------------------------------------- API

function token() { return localStorage.getItem("kinema-token") || ""; }

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (token()) headers.set("Authorization", `Bearer ${token()}`);
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    $("#token-form").classList.add("needed");
    throw new Error("This server needs an API token: paste it at the top right and press Save token.");
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error.message || message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

const getJSON = async (path) => (await api(path)).json();

async function blobURL(key, path) {
  const blob = await (await api(path)).blob();
  const url = URL.createObjectURL(blob);
  if (state.blobs.has(key)) URL.revokeObjectURL(state.blobs.get(key));
  state.blobs.set(key, url);
  return url;
}

// ---------------------------------------------------------------------------- form

function showModel(health) {
  // the model's name, its own size among the resolutions (Wan: 480 or 704), chosen when it is not one of them, and
  // whether it expands prompts
  $("#model").textContent = `model: ${health.model}`;
  state.multiple = health.size_multiple || 8;
  const base = Math.min(...String(health.size || "").split("x").map(Number));
  const select = $("#resolution");
  if (base > 0 && ![...select.options].some((o) => Number(o.value) === base)) {
    select.add(new Option(`model's (${base})`, String(base), true, true));
  }
  $("#size").textContent = currentSize();
  // a model trained on your own captions (or Wan) does not expand prompts: the switch starts at the model's default
  if (typeof health.expand === "boolean") $("#expand").checked = health.expand;
}

function sizeFor(aspect, base) {
  const [w, h] = aspect.split(":").map(Number);
  const step = state.multiple;  // the model's: 8, 16 for Wan2.1, 32 for Wan2.2 TI2V-5B
  const long = Math.max(step, Math.round((base * Math.max(w, h)) / Math.min(w, h) / step) * step);
  return w >= h ? `${long}x${base}` : `${base}x${long}`;
}

function currentSize() { return sizeFor(state.aspect, Number($("#resolution").value)); }

function showMode(mode) {
  state.mode = mode;
  $$("#modes button").forEach((b) => b.classList.toggle("active", b.dataset.mode === mode
    || (mode === "remix" && b.dataset.mode === "edit")));
  $$("[data-modes]").forEach((el) => { el.hidden = !el.dataset.modes.split(" ").includes(mode); });
  const fromGallery = state.source !== null && (mode === "remix" || mode === "extend");
  $("#video").closest(".field").hidden = fromGallery || !["edit", "extend", "connect"].includes(mode);
  $("#video-label").textContent = mode === "connect" ? "First video" : "Video";
  $("#source-banner").hidden = !fromGallery;
  if (fromGallery) {
    const verb = mode === "remix" ? "Remixing" : "Extending";
    $("#source-text").textContent = `${verb} “${state.source.prompt}” (${state.source.id.slice(0, 14)}…)`;
  }
}

function setSource(video, mode) {
  state.source = { id: video.id, prompt: video.prompt || "" };
  showMode(mode);
  $("#prompt").value = video.prompt || "";
  $("#prompt").focus();
  window.scrollTo({ top: 0, behavior: "smooth" });
}

function clearSource() {
  const mode = state.mode === "remix" ? "edit" : state.mode;
  state.source = null;
  showMode(mode);
}

function addShot(values = {}) {
  const shot = $("#shot-template").content.firstElementChild.cloneNode(true);
  $(".shot-framing", shot).value = values.framing || "wide";
  $(".shot-seconds", shot).value = values.seconds || 2;
  $(".shot-prompt", shot).value = values.prompt || "";
  $(".shot-remove", shot).addEventListener("click", () => {
    if ($$("#shots .shot").length > 1) shot.remove();
    showTotal();
  });
  $(".shot-seconds", shot).addEventListener("input", showTotal);
  $("#shots").append(shot);
  showTotal();
}

function showTotal() {
  const shots = $$("#shots .shot");
  const seconds = shots.reduce((sum, shot) => sum + (Number($(".shot-seconds", shot).value) || 0), 0);
  $("#storyboard-total").textContent = `${shots.length} shot${shots.length === 1 ? "" : "s"}, ${seconds} s`;
}

function storyboard() {
  const shots = $$("#shots .shot").map((shot) => ({
    seconds: Number($(".shot-seconds", shot).value),
    framing: $(".shot-framing", shot).value,
    prompt: $(".shot-prompt", shot).value.trim(),
  }));
  const scene = $("#scene").value.trim();
  return scene ? { scene, shots } : { shots };
}

function addSampling(data) {
  const fields = {
    seed: "#seed", steps: "#steps", guidance: "#guidance", negative_prompt: "#negative",
    context_noise: "#context-noise", anchor: "#anchor",
  };
  for (const [name, selector] of Object.entries(fields)) {
    const value = $(selector).value.trim();
    if (value !== "") data.set(name, value);
  }
}

function needFile(selector, what) {
  const file = $(selector).files[0];
  if (!file) throw new Error(`Choose ${what} first.`);
  return file;
}

// The request for the form as it stands: [path, options].
function buildRequest() {
  const data = new FormData();
  const prompt = $("#prompt").value.trim();
  const mode = state.mode;
  addSampling(data);
  if (mode === "remix") {
    const body = { prompt, strength: Number($("#strength").value), expand: $("#expand").checked };
    for (const [key, value] of data.entries()) body[key] = key === "negative_prompt" ? value : Number(value);
    return [`/v1/videos/${state.source.id}/remix`,
      { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } }];
  }
  if (mode === "storyboard") {  // the shots set the length; the scene is the prompt; shots are used as written
    data.set("storyboard", JSON.stringify(storyboard()));
    data.set("size", currentSize());
    return ["/v1/videos", { method: "POST", body: data }];
  }
  data.set("prompt", prompt);
  data.set("expand", $("#expand").checked ? "true" : "false");
  if (mode === "edit") {
    data.set("video", needFile("#video", "a video to edit"));
    data.set("strength", $("#strength").value);
    return ["/v1/videos/edits", { method: "POST", body: data }];
  }
  if (mode === "extend") {
    if (state.source) data.set("video[id]", state.source.id);
    else data.set("video", needFile("#video", "a video to extend"));
    data.set("seconds", $("#seconds").value);
    data.set("direction", $("#direction").value);
    return ["/v1/videos/extensions", { method: "POST", body: data }];
  }
  data.set("seconds", $("#seconds").value);
  data.set("size", currentSize());
  if (mode === "image") data.set("input_reference", needFile("#image", "an image"));
  if (mode === "loop") data.set("mode", "loop");
  if (mode === "connect") {
    data.set("mode", "connect");
    data.set("video", needFile("#video", "the first video"));
    data.set("video_end", needFile("#video-end", "the end video"));
  }
  return ["/v1/videos", { method: "POST", body: data }];
}

// What the server warns about a request (a prompt the model cannot draw), shown once, under the form.
function showWarnings(video) {
  const warnings = (video.kinema && video.kinema.warnings) || [];
  $("#form-warning").textContent = warnings.length ? `Warning: ${warnings.join(" ")}` : "";
  $("#form-warning").hidden = !warnings.length;
}

async function submit(event) {
  event.preventDefault();
  $("#form-error").textContent = "";
  $("#form-warning").hidden = true;
  const button = $("#generate");
  button.disabled = true;
  try {
    const [path, options] = buildRequest();
    const video = await (await api(path, options)).json();
    showWarnings(video);
    track(video);
    loadGallery();
  } catch (error) {
    $("#form-error").textContent = error.message;
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------------------- result

function setProgress(video) {
  const bar = $("#bar");
  const percent = video.status === "completed" ? 100 : video.progress || 0;
  bar.style.width = `${percent}%`;
  bar.className = video.status === "completed" ? "done" : video.status === "failed" ? "failed" : "";
  bar.parentElement.setAttribute("aria-valuenow", String(percent));
  const ahead = video.kinema && video.kinema.queue_position;
  const words = {
    queued: ahead ? `Queued, ${ahead} ahead` : "Queued",
    in_progress: "Generating",
    completed: "Done",
    failed: `Failed: ${video.error ? video.error.message : "unknown error"}`,
  };
  $("#status").textContent = words[video.status] || video.status;
  $("#status").className = video.status === "failed" ? "error" : "muted";
  $("#percent").textContent = video.status === "failed" ? "" : `${percent}%`;
}

function track(video) {
  clearTimeout(state.polling);
  state.current = video.id;
  setProgress(video);
  $("#result-actions").hidden = true;
  $("#provenance").hidden = true;
  if (video.status === "completed") { show(video); return; }
  if (video.status === "failed") return;
  const poll = async () => {
    if (state.current !== video.id) return;
    try {
      const latest = await getJSON(`/v1/videos/${video.id}`);
      setProgress(latest);
      const pending = document.querySelector(`#gallery .card[data-id="${latest.id}"] .pending`);
      if (pending && latest.status === "in_progress") pending.textContent = `${latest.progress || 0}%`;
      if (latest.status === "completed") { show(latest); loadGallery(); return; }
      if (latest.status === "failed") { loadGallery(); return; }
    } catch (error) {
      $("#status").textContent = error.message;
    }
    state.polling = setTimeout(poll, 400);
  };
  state.polling = setTimeout(poll, 300);
}

async function show(video) {
  const url = await blobURL("player", `/v1/videos/${video.id}/content`);
  if (state.current !== video.id) return;
  const player = $("#player");
  player.src = url;
  player.hidden = false;
  $("#placeholder").hidden = true;
  const download = $("#download");
  download.href = url;
  download.download = `${video.id}.mp4`;
  $("#result-actions").hidden = false;
  $("#remix-current").onclick = () => setSource(video, "remix");
  $("#extend-current").onclick = () => setSource(video, "extend");
  player.play().catch(() => { /* autoplay may be refused; the controls are there */ });
  try {
    const metadata = await getJSON(`/v1/videos/${video.id}/content?variant=metadata`);
    showMetadata(video, metadata);
  } catch (error) {
    showMetadata(video, { note: error.message });
  }
}

// A storyboard's shots, one per line: "1. wide, 2 s: the red ball is dropped".
function shotLines(board) {
  return board.shots.map((shot, n) => `${n + 1}. ${shot.framing}, ${shot.seconds} s: ${shot.prompt}`).join("\n");
}

function showMetadata(video, metadata) {
  const list = $("#metadata");
  list.replaceChildren();
  const board = metadata.storyboard;
  const rows = {
    id: video.id, prompt: metadata.prompt,
    // the text the model got: the expansion of the prompt, or each shot's caption
    "expanded prompt": metadata.expanded_prompt,
    expansion: metadata.expand === undefined ? undefined : metadata.expand ? "on" : "off",
    scene: board ? board.scene : undefined, shots: board ? shotLines(board) : undefined,
    "shot captions": board && metadata.shot_texts ? metadata.shot_texts.join("\n") : undefined,
    mode: metadata.mode, seed: metadata.seed, steps: metadata.steps,
    guidance: metadata.guidance, sampler: metadata.sampler, size: metadata.size, fps: metadata.fps,
    frames: metadata.frames, seconds: video.seconds, model: metadata.model, device: metadata.device,
    "model sha256": metadata.model_sha256, "kinema version": metadata.kinema_version, created: metadata.created,
  };
  if (metadata.negative_prompt) rows["negative prompt"] = metadata.negative_prompt;
  if (metadata.context_noise !== undefined) rows["context noise"] = metadata.context_noise;
  if (metadata.anchor !== undefined) rows.anchor = metadata.anchor;
  if (video.remixed_from_video_id) rows["remixed from"] = video.remixed_from_video_id;
  if (metadata.note) rows.note = metadata.note;
  for (const [key, value] of Object.entries(rows)) {
    if (value === undefined || value === null || value === "") continue;
    const dt = document.createElement("dt");
    dt.textContent = key;
    const dd = document.createElement("dd");
    dd.textContent = typeof value === "object" ? JSON.stringify(value) : String(value);
    list.append(dt, dd);
  }
  $("#provenance").hidden = false;
}

// ---------------------------------------------------------------------------- gallery

function card(video) {
  const node = $("#card-template").content.firstElementChild.cloneNode(true);
  node.dataset.id = video.id;
  $(".card-prompt", node).textContent = video.prompt || "(no prompt)";
  $(".card-meta", node).textContent = `${video.size} · ${video.seconds} s · ${video.kinema ? video.kinema.mode : ""}`;
  const badge = $(".badge", node);
  badge.textContent = video.status.replace("_", " ");
  badge.classList.add(video.status);
  const done = video.status === "completed";
  for (const selector of [".card-remix", ".card-extend"]) {
    $(selector, node).disabled = !done;
    $(selector, node).title = done ? "" : "Only a finished video can be remixed or extended";
  }
  const pending = $(".pending", node);  // what the card shows until its thumbnail is there
  const busy = video.status === "queued" || video.status === "in_progress";
  pending.classList.toggle("busy", busy);
  pending.textContent = video.status === "in_progress" ? `${video.progress || 0}%` : video.status === "queued"
    ? "queued" : video.status === "failed" ? "failed" : "";
  $(".thumb", node).addEventListener("click", () => track(video));
  $(".card-remix", node).addEventListener("click", () => setSource(video, "remix"));
  $(".card-extend", node).addEventListener("click", () => setSource(video, "extend"));
  $(".card-delete", node).addEventListener("click", async () => {
    try {
      await api(`/v1/videos/${video.id}`, { method: "DELETE" });
      node.remove();
    } catch (error) {
      $("#form-error").textContent = error.message;
    }
  });
  if (done) {  // the picture is added once it has loaded, so no card ever shows a broken image
    blobURL(`thumb-${video.id}`, `/v1/videos/${video.id}/content?variant=thumbnail`)
      .then((url) => {
        const img = Object.assign(document.createElement("img"), { alt: "", src: url });
        img.addEventListener("load", () => { pending.replaceWith(img); });
      })
      .catch(() => { /* the card still works without its picture */ });
  }
  return node;
}

async function loadGallery(append = false) {
  try {
    const after = append && state.nextPage ? `&after=${state.nextPage}` : "";
    const page = await getJSON(`/v1/videos?limit=12${after}`);
    const cards = page.data.map(card);
    if (append) $("#gallery").append(...cards);
    else $("#gallery").replaceChildren(...cards);
    state.nextPage = page.has_more ? page.last_id : null;
    $("#more").hidden = !page.has_more;
  } catch (error) {
    $("#gallery").replaceChildren(Object.assign(document.createElement("p"),
      { className: "muted", textContent: error.message }));
  }
}

// ---------------------------------------------------------------------------- start

function start() {
  $("#token").value = token();
  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    localStorage.setItem("kinema-token", $("#token").value.trim());
    $("#token-form").classList.remove("needed");
    loadGallery();
  });
  $$("#modes button").forEach((b) => b.addEventListener("click", () => {
    state.source = null;
    showMode(b.dataset.mode);
  }));
  $$("#aspect button").forEach((b) => b.addEventListener("click", () => {
    state.aspect = b.dataset.aspect;
    $$("#aspect button").forEach((o) => o.classList.toggle("active", o === b));
    $("#size").textContent = currentSize();
  }));
  $("#resolution").addEventListener("change", () => { $("#size").textContent = currentSize(); });
  $$("#seconds-presets button").forEach((b) => b.addEventListener("click", () => {
    $("#seconds").value = b.dataset.seconds;
    $$("#seconds-presets button").forEach((o) => o.classList.toggle("active", o === b));
  }));
  $("#seconds").addEventListener("input", () => {
    $$("#seconds-presets button").forEach((o) => o.classList.toggle("active", o.dataset.seconds === $("#seconds").value));
  });
  $("#strength").addEventListener("input", () => { $("#strength-value").textContent = $("#strength").value; });
  $("#add-shot").addEventListener("click", () => addShot());
  $("#source-clear").addEventListener("click", clearSource);
  $("#form").addEventListener("submit", submit);
  $("#refresh").addEventListener("click", () => loadGallery());
  $("#more").addEventListener("click", () => loadGallery(true));
  addShot({ framing: "wide", seconds: 2 });
  addShot({ framing: "closeup", seconds: 2 });
  showMode("text");
  fetch("/healthz").then((r) => r.json()).then(showModel)
    .catch(() => { /* the page works without the model name */ });
  loadGallery();
}

document.addEventListener("DOMContentLoaded", start);
