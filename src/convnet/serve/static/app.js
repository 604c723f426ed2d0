// convnet serve, page "/": classify images with a served model and show what the network sees.
// Plain JavaScript, no build step and nothing fetched from outside the server: the page works offline.
// Every number and image comes from the JSON API (/api/models, /api/model, /predict, /cam, /features).
import { api, el, showError } from "./common.js";
import { count, historyLabel, metricRows, metricValue, normalization, percent } from "./format.js";

const TOP_K = 5;
const $ = (id) => document.getElementById(id);

const state = {
  models: [],      // GET /api/models
  card: null,      // GET /api/model for the chosen model
  images: [],      // {file, url, result}: result is {predictions} or {error} once /predict answered
  selected: -1,    // index into images
  view: 0,         // bumped on every new selection, so answers to older requests are dropped
  ready: null,     // settles once the model list and card have loaded
};

// ---- talking to the API ----------------------------------------------------------------------

function form(fields) {
  const data = new FormData();
  for (const [name, value] of Object.entries(fields)) {
    if (value === undefined || value === null) continue;
    if (Array.isArray(value)) value.forEach((v) => data.append(name, v, v.name));
    else if (value instanceof File) data.append(name, value, value.name);
    else data.append(name, String(value));
  }
  return { method: "POST", body: data };
}

// ---- small helpers ---------------------------------------------------------------------------

const pngSrc = (b64) => `data:image/png;base64,${b64}`;
const modelName = () => $("model-select").value;
const currentImage = () => state.images[state.selected];

function setStatus(message) {
  $("status").textContent = message || "";
}

// ---- models and the model card ---------------------------------------------------------------

async function loadModels() {
  try {
    state.models = await api("/api/models");
  } catch (e) {
    showError(e.message);
    return;
  }
  const select = $("model-select");
  select.replaceChildren(...state.models.map((m) => el("option", { value: m.name, text: `${m.name} (${m.format})` })));
  if (!state.models.length) {
    showError("The server has no model loaded; start it with convnet serve MODEL.");
    return;
  }
  await loadModelCard();
}

async function loadModelCard() {
  const body = $("model-body");
  state.card = null;
  try {
    state.card = await api(`/api/model?model=${encodeURIComponent(modelName())}`);
  } catch (e) {
    body.replaceChildren(el("p", { class: "muted", text: "The model card could not be loaded." }));
    showError(e.message);
    return;
  }
  body.replaceChildren(...modelCard(state.card));
}

function modelCard(m) {
  const [h, w] = m.input_size;
  const args = m.model_args && Object.keys(m.model_args).length ? ` ${JSON.stringify(m.model_args)}` : "";
  const facts = el("dl", { class: "facts" });
  const fact = (term, value) => facts.append(el("dt", { text: term }), el("dd", { text: value }));
  fact("Name", m.name);
  fact("File format", m.format);
  fact("Architecture", `${m.model}${args}`);
  fact("Input", `${m.in_chans} × ${h} × ${w} (channels × height × width)`);
  if (m.mean && m.std) fact("Normalization", normalization(m.mean, m.std));
  if (m.data_source) fact("Trained on", m.data_source);
  if (m.total_params !== undefined && m.total_params !== null) fact("Parameters", count(m.total_params));

  const left = [facts];
  left.push(el("h3", { text: `Classes (${m.classes.length})` }), el("ul", { class: "chips", "data-testid": "classes" }, ...m.classes.map((c) => el("li", { text: c }))));
  if (m.metrics && Object.keys(m.metrics).length) {
    const rows = metricRows(m.metrics).map(([label, value]) => el("tr", {}, el("th", { scope: "row", text: label }), el("td", { class: "num", text: value })));
    left.push(el("h3", { text: "At the end of training" }), el("div", { class: "scroll-x" }, el("table", { class: "metrics", "data-testid": "metrics" }, el("tbody", {}, ...rows))));
  }
  const right = m.summary && m.summary.length ? [el("h3", { text: "Layers" }), el("div", { class: "scroll-x" }, summaryTable(m))] : [];
  const parts = [el("div", { class: "model-grid" }, el("div", {}, ...left), el("div", {}, ...right))];
  if (m.curves) {
    parts.push(el("h3", { text: "Training curves" }),
      el("img", { class: "curves", src: m.curves, alt: "Accuracy and loss per epoch, training and validation", "data-testid": "curves" }));
  } else if (m.history && m.history.length) {
    parts.push(el("h3", { text: "Training history" }), el("div", { class: "scroll-x" }, historyTable(m.history)));
  }
  return parts;
}

function summaryTable(m) {
  const head = el("tr", {}, el("th", { scope: "col", text: "Layer" }), el("th", { scope: "col", text: "Output shape" }), el("th", { scope: "col", class: "num", text: "Params" }));
  const rows = m.summary.map((r) => el("tr", {},
    el("td", { class: "mono", text: r.layer }),
    el("td", { class: "mono", text: `(${r.output_shape.join(", ")})` }),
    el("td", { class: "num", text: count(r.params) })));
  const foot = el("tr", {}, el("th", { scope: "row", text: "Total" }), el("td"), el("td", { class: "num", text: count(m.total_params) }));
  return el("table", { "data-testid": "summary" }, el("thead", {}, head), el("tbody", {}, ...rows), el("tfoot", {}, foot));
}

function historyTable(history) {
  const keys = Object.keys(history[0]).filter((k) => /epoch|acc|loss/.test(k));
  const head = el("tr", {}, ...keys.map((k) => el("th", { scope: "col", class: "num", text: historyLabel(k) })));
  const rows = history.map((row) => el("tr", {}, ...keys.map((k) => el("td", { class: "num", text: metricValue(k, row[k]) }))));
  return el("table", { "data-testid": "history" }, el("thead", {}, head), el("tbody", {}, ...rows));
}

// ---- images: adding, predicting, choosing ----------------------------------------------------

async function addFiles(fileList) {
  const files = Array.from(fileList || []);
  if (!files.length) return;
  const first = state.images.length;
  const added = files.map((file) => ({ file, url: URL.createObjectURL(file), result: null }));
  state.images.push(...added);
  renderThumbs();
  await predict(added);
  select(first);
}

/** One /predict request for several images; each gets its own result or error sentence. */
async function predict(images) {
  if (!images.length) return;
  await state.ready; // the model list, so the request names the chosen model
  setStatus(images.length === 1 ? "Classifying…" : `Classifying ${images.length} images…`);
  const fields = { top_k: TOP_K, tta: $("tta-select").value, model: modelName() };
  if (images.length === 1) fields.file = images[0].file;
  else fields.files = images.map((im) => im.file);
  try {
    const answers = await api("/predict", form(fields));
    images.forEach((im, i) => { im.result = answers[i] || { error: "The server sent no answer for this file." }; });
  } catch (e) {
    images.forEach((im) => { im.result = { error: e.message }; });
  }
  setStatus("");
  renderThumbs();
}

function renderThumbs() {
  const items = state.images.map((im, i) => {
    const failed = im.result && im.result.error;
    const img = el("img", { src: im.url, alt: im.file.name });
    // A file the browser cannot draw (not an image) gets a plain tile instead of a broken-image icon.
    img.addEventListener("error", () => img.replaceWith(el("span", { class: "placeholder", "aria-hidden": "true", text: "no image" })), { once: true });
    const button = el("button", {
      type: "button",
      class: failed ? "failed" : "",
      "aria-pressed": String(i === state.selected),
      "data-index": String(i),
      title: im.file.name,
      onclick: () => select(i),
    }, img, el("span", { text: im.file.name }));
    return el("li", {}, button);
  });
  $("thumbs").replaceChildren(...items);
}

function select(index) {
  state.selected = index;
  const view = ++state.view;
  renderThumbs();
  const im = currentImage();
  if (!im || !im.result) return;
  if (im.result.error) {
    // The server's sentences name the file already; a sentence from elsewhere gets the name in front.
    const message = im.result.error;
    showError(message.includes(im.file.name) ? message : `${im.file.name}: ${message}`);
    $("results").hidden = true;
    $("features-section").hidden = true;
    return;
  }
  showError("");
  renderBars(im.result.predictions);
  $("results").hidden = false;
  const explainable = !state.card || state.card.explainable !== false;
  $("features-section").hidden = !explainable;
  if (!explainable) {
    setExplainUnavailable();
    return;
  }
  requestCam(null, view);
  requestFeatures(view);
}

// ---- prediction bars, Grad-CAM and feature maps ----------------------------------------------

function renderBars(predictions) {
  const top = predictions[0];
  $("top-class").textContent = top ? top.class : "";
  $("top-probability").textContent = top ? percent(top.probability) : "";
  const bars = predictions.map((p, i) => el("li", {}, el("button", {
    type: "button",
    class: "bar",
    "data-class": p.class,
    "aria-pressed": String(i === 0),
    "aria-label": `${p.class}: ${percent(p.probability)}. Show Grad-CAM for this class.`,
    onclick: () => requestCam(p.class, state.view),
  },
  el("span", { class: "name", text: p.class }),
  el("span", { class: "track" }, el("span", { class: "fill", style: `display:block;width:${(100 * p.probability).toFixed(2)}%` })),
  el("span", { class: "pct", text: percent(p.probability) }))));
  $("bars").replaceChildren(...bars);
}

async function requestCam(className, view) {
  const im = currentImage();
  if (!im) return;
  for (const b of $("bars").querySelectorAll(".bar")) {
    b.setAttribute("aria-pressed", String(className === null ? b === $("bars").querySelector(".bar") : b.dataset.class === className));
  }
  $("cam-caption").textContent = "Computing Grad-CAM…";
  let cam;
  try {
    cam = await api("/cam", form({ file: im.file, class_name: className, format: "json", model: modelName() }));
  } catch (e) {
    if (view === state.view) { showError(e.message); $("cam-caption").textContent = ""; }
    return;
  }
  if (view !== state.view) return;
  const [h, w] = state.card ? state.card.input_size : ["?", "?"];
  const chans = state.card ? state.card.in_chans : "?";
  $("input-image").src = pngSrc(cam.input_png);
  $("input-caption").textContent = `${h} × ${w} pixels, ${chans} channel${chans === 1 ? "" : "s"}: the model's input, enlarged without smoothing.`;
  const cimg = $("cam-image");
  cimg.src = pngSrc(cam.overlay_png);
  cimg.dataset.class = cam.class;
  cimg.alt = `Grad-CAM heat map for class ${cam.class} over the image`;
  $("cam-caption").textContent = `Grad-CAM for ${cam.class} (${percent(cam.probability)})`;
}

async function requestFeatures(view) {
  const im = currentImage();
  const box = $("features");
  box.replaceChildren(el("p", { class: "muted", text: "Computing feature maps…" }));
  let answer;
  try {
    answer = await api("/features", form({ file: im.file, format: "json", model: modelName() }));
  } catch (e) {
    if (view === state.view) { showError(e.message); box.replaceChildren(); }
    return;
  }
  if (view !== state.view) return;
  const figures = answer.layers.map((layer) => el("figure", { "data-layer": layer.name },
    el("img", { class: "pixelated", src: pngSrc(layer.png), alt: `Feature maps of layer ${layer.name}: ${layer.channels} channels of ${layer.height} by ${layer.width}` }),
    el("figcaption", { text: `${layer.name}: ${layer.channels} × ${layer.height} × ${layer.width}` })));
  if (answer.filters_png) {
    figures.push(el("figure", { "data-testid": "filters" },
      el("img", { class: "pixelated", src: pngSrc(answer.filters_png), alt: "The first convolution layer's filters" }),
      el("figcaption", { text: "First layer's filters" })));
  }
  box.replaceChildren(...figures);
}

function setExplainUnavailable() {
  $("input-image").removeAttribute("src");
  $("cam-image").removeAttribute("src");
  $("input-caption").textContent = "";
  $("cam-caption").textContent = "This model file runs without gradients or layer outputs, so Grad-CAM and feature maps are not available for it.";
}

// ---- wiring ----------------------------------------------------------------------------------

async function changeModel() {
  showError("");
  await loadModelCard();
  await predict(state.images);
  if (state.selected >= 0) select(state.selected);
}

async function changeTta() {
  await predict(state.images);
  if (state.selected >= 0) select(state.selected);
}

function wireDropZone() {
  const zone = $("drop-zone");
  // Dropping a file anywhere else would make the browser leave the page to show it.
  for (const type of ["dragover", "drop"]) window.addEventListener(type, (e) => e.preventDefault());
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("dragging"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("dragging");
    addFiles(e.dataTransfer.files);
  });
}

function wirePaste() {
  document.addEventListener("paste", (e) => {
    const files = Array.from((e.clipboardData && e.clipboardData.files) || []).filter((f) => f.type.startsWith("image/"));
    if (!files.length) return;
    e.preventDefault();
    addFiles(files);
  });
}

function main() {
  const input = $("file-input");
  input.addEventListener("change", () => {
    const files = Array.from(input.files);
    input.value = ""; // so choosing the same file again still fires "change"
    addFiles(files);
  });
  $("model-select").addEventListener("change", changeModel);
  $("tta-select").addEventListener("change", changeTta);
  wireDropZone();
  wirePaste();
  state.ready = loadModels();
}

main();
