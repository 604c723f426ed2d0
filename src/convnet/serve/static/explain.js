// convnet serve, page "/explain": the tutorial's worked example with every number in a grid.
// The numbers come from GET /api/explain (the NumPy engine, the same object `convnet explain --json` prints);
// this file only lays them out. The one thing it works out itself is which input pixels a chosen output
// cell covers, to highlight them.
import { api, el, showError } from "./common.js";

const $ = (id) => document.getElementById(id);
// The form's fields, by the query parameter each one sets, and the tutorial's values for them.
const SETTINGS = { kernel: 2, stride: 1, padding: 0, pool: 2, pool_stride: 1, seed: 0 };

let latest = 0;      // number of the newest request: answers to older ones are dropped
let example = null;  // the last answer
let picked = [0, 0]; // the convolution output cell whose sum is spelled out

/** A number as the grids show it: integers as they are, others to at most 4 decimals. */
function fmt(v) {
  if (Number.isInteger(v)) return String(v);
  return String(Number(v.toFixed(4)));
}

/**
 * An HTML table of a 2-D array.
 * @param {number[][]} values rows of numbers
 * @param {object} opts caption, class (extra class of the table), cell(i, j, v) -> extra class of a cell,
 *   rowHeads / colHeads (labels), pick(i, j) (makes cells choosable)
 */
function matrix(values, opts = {}) {
  const table = el("table", { class: `matrix ${opts.class || ""}` });
  if (opts.caption) table.append(el("caption", { text: opts.caption }));
  if (opts.colHeads) table.append(el("thead", {}, el("tr", {}, ...(opts.rowHeads ? [el("th")] : []), ...opts.colHeads.map((h) => el("th", { scope: "col", text: h })))));
  const body = el("tbody");
  values.forEach((row, i) => {
    const tr = el("tr");
    if (opts.rowHeads) tr.append(el("th", { scope: "row", text: opts.rowHeads[i] }));
    row.forEach((v, j) => {
      const td = el("td", { "data-row": i, "data-col": j, "data-value": v, text: v === null ? "0" : fmt(v) });
      const extra = opts.cell ? opts.cell(i, j, v) : "";
      if (extra) td.className = extra;
      if (opts.pick) {
        td.classList.add("pick");
        td.tabIndex = 0;
        td.setAttribute("role", "button");
        td.setAttribute("aria-label", `output row ${i + 1}, column ${j + 1}: ${fmt(v)}; show its sum`);
        td.addEventListener("click", () => opts.pick(i, j));
        td.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); opts.pick(i, j); } });
      }
      tr.append(td);
    });
    body.append(tr);
  });
  table.append(body);
  return table;
}

/** The (n + 2p - k) / s + 1 line with the current numbers; floor brackets when s does not divide. */
function formula({ n, k, p, s, out }) {
  const inner = `${n} − ${k} + 2×${p}`;
  const exact = (n - k + 2 * p) % s === 0;
  const value = exact ? `(${inner}) / ${s} + 1` : `⌊(${inner}) / ${s}⌋ + 1`;
  return `(W − K + 2P) / S + 1 = ${value} = ${out}, so ${out}×${out}`;
}

/** Image rows padded with `p` zeros on each side; pad cells are null. */
function padded(channel, p) {
  const n = channel.length;
  return Array.from({ length: n + 2 * p }, (_, i) => Array.from({ length: n + 2 * p }, (_, j) => {
    const [r, c] = [i - p, j - p];
    return r >= 0 && r < n && c >= 0 && c < n ? channel[r][c] : null;
  }));
}

function render(r) {
  const [pi, pj] = picked;
  const k = r.kernel;
  // The window of the picked output cell, in padded coordinates.
  const inWindow = (i, j) => i >= pi * r.stride && i < pi * r.stride + k && j >= pj * r.stride && j < pj * r.stride + k;

  $("image-grids").replaceChildren(...r.image.map((ch, c) => matrix(padded(ch, r.padding), {
    caption: `image, channel ${r.channel_names[c]}`,
    class: `ch-${r.channel_names[c]}`,
    cell: (i, j, v) => [v === null ? "pad" : "", inWindow(i, j) ? "hl" : ""].join(" ").trim(),
  })));
  $("filter-grids").replaceChildren(...r.filters.map((f, c) => matrix(f, {
    caption: `filter, channel ${r.channel_names[c]}`,
    cell: (i, j, v) => (v < 0 ? "neg" : ""),
  })));
  $("bias").textContent = `+ bias ${r.bias}`;

  $("conv-formula").textContent = formula(r.output_size.conv);
  $("conv-grid").replaceChildren(matrix(r.conv[0], {
    caption: `convolution output, ${r.conv[0].length}×${r.conv[0][0].length}`,
    cell: (i, j, v) => [v < 0 ? "neg" : "", i === pi && j === pj ? "hl" : ""].join(" ").trim(),
    pick: (i, j) => { picked = [i, j]; render(example); },
  }));
  $("conv-detail").textContent = convSum(r, pi, pj);

  $("relu-grid").replaceChildren(matrix(r.relu[0], {
    caption: "after ReLU",
    cell: (i, j) => (r.conv[0][i][j] < 0 ? "zeroed" : ""),
  }));

  $("pool-formula").textContent = formula(r.output_size.pool);
  const poolCaption = `${r.pool_kernel}×${r.pool_kernel} window, stride ${r.pool_stride}`;
  $("max-pool-grid").replaceChildren(matrix(r.max_pool[0], { caption: `max pooling (${poolCaption})` }));
  $("avg-pool-grid").replaceChildren(matrix(r.avg_pool[0], { caption: `average pooling (${poolCaption})` }));

  renderDense(r);
  renderParameters(r.parameters);
}

/** "R: 8×0 + 9×1 + … + bias 0 = 10" for one output cell; the total is the engine's. */
function convSum(r, oi, oj) {
  const terms = r.image.map((ch, c) => {
    const rows = padded(ch, r.padding);
    const parts = [];
    for (let a = 0; a < r.kernel; a++) {
      for (let b = 0; b < r.kernel; b++) {
        const v = rows[oi * r.stride + a][oj * r.stride + b];
        const w = r.filters[c][a][b];
        parts.push(`${v === null ? 0 : v}×${w < 0 ? `(${w})` : w}`);
      }
    }
    return `  ${r.channel_names[c]}: ${parts.join(" + ")}`;
  });
  return `output row ${oi + 1}, column ${oj + 1} =\n${terms.join(" +\n")}\n  + bias ${r.bias}\n  = ${fmt(r.conv[0][oi][oj])}`;
}

function renderDense(r) {
  const inputs = r.flat.map((_, i) => `x${i + 1}`);
  $("flat-grid").replaceChildren(matrix([r.flat], { caption: "flattened max-pooled map", colHeads: inputs }));
  const weights = r.dense_weights.map((row, o) => [...row, r.dense_bias[o]]);
  $("dense-grid").replaceChildren(matrix(weights, {
    caption: "dense weights and bias, one row per output",
    colHeads: [...inputs, "bias"],
    rowHeads: r.output_names,
    cell: (i, j, v) => (v < 0 ? "neg" : ""),
  }));
  const best = r.probabilities.indexOf(Math.max(...r.probabilities));
  const rows = r.output_names.map((_, o) => [r.logits[o], r.probabilities[o]]);
  $("softmax-grid").replaceChildren(matrix(rows, {
    caption: "logit = weights · x + bias; probability = softmax(logits)",
    colHeads: ["logit", "probability"],
    rowHeads: r.output_names,
    cell: (i, j) => (i === best && j === 1 ? "max" : ""),
  }));
}

function renderParameters(p) {
  const dense = p.dense_neuron;
  const filter = p.filter;
  const net = p.network;
  const layers = net.layers.map((l) => el("tr", {},
    el("td", { class: "mono", text: l.name }),
    el("td", { text: l.kind }),
    el("td", { class: "mono", text: `(${l.out_shape.join(", ")})` }),
    el("td", { class: "mono", text: l.shapes.map((s) => `(${s.join("×")})`).join(" + ") || "–" }),
    el("td", { class: "num", text: l.count.toLocaleString("en") })));
  $("parameters").replaceChildren(
    el("p", { text: `One dense neuron on a ${dense.side}×${dense.side}×${dense.channels} image: ${dense.side}×${dense.side}×${dense.channels} = ${dense.weights.toLocaleString("en")} weights.` }),
    el("p", { text: `One ${filter.kernel}×${filter.kernel} filter on ${filter.channels} channels: ${filter.kernel}×${filter.kernel}×${filter.channels} = ${filter.weights} weights + ${filter.bias} bias, wherever it slides.` }),
    el("p", { text: `The tutorial network (${net.spec}) on ${net.input.join("×")} images with ${net.classes} classes:` }),
    el("table", {},
      el("thead", {}, el("tr", {}, ...["layer", "kind", "output", "weights", "parameters"].map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, ...layers),
      el("tfoot", {}, el("tr", {}, el("th", { scope: "row", colspan: "4", text: "total" }), el("td", { class: "num", text: net.total.toLocaleString("en") })))));
}

function currentSettings() {
  return Object.fromEntries(Object.keys(SETTINGS).map((name) => [name, document.querySelector(`#settings [name="${name}"]`).value.trim()]));
}

async function update() {
  const settings = currentSettings();
  const query = new URLSearchParams(settings).toString();
  const mine = ++latest;
  let r;
  try {
    r = await api(`/api/explain?${query}`);
  } catch (e) {
    if (mine === latest) {
      showError(e.message);
      $("example").setAttribute("aria-disabled", "true");
      $("example").style.opacity = "0.45";
    }
    return;
  }
  if (mine !== latest) return;
  showError("");
  $("example").removeAttribute("aria-disabled");
  $("example").style.opacity = "";
  history.replaceState(null, "", `?${query}`);
  example = r;
  const out = r.conv[0].length;
  if (picked[0] >= out || picked[1] >= out) picked = [0, 0];
  render(r);
}

function main() {
  const form = $("settings");
  // Settings in the address (?stride=2...) win over the defaults, so a view can be shared.
  const query = new URLSearchParams(location.search);
  for (const [name, value] of Object.entries(SETTINGS)) {
    form.elements[name].value = query.get(name) ?? value;
  }
  let timer = null;
  form.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(update, 120);
  });
  form.addEventListener("submit", (e) => e.preventDefault());
  $("reset").addEventListener("click", () => {
    for (const [name, value] of Object.entries(SETTINGS)) form.elements[name].value = value;
    update();
  });
  update();
}

main();
