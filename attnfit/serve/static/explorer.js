// The attention explorer: sends the text to the served model's endpoint with need_weights=true and draws the
// weights it returns. Plain JavaScript, no build step. Every heat-map cell carries its weight in data-value.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, result: null, maps: [] };

const OPTIONS = {  // per endpoint: [name, default, type]
  generate: [["max_new_tokens", 20, "int"], ["temperature", 0, "float"], ["top_p", "", "float"]],
  translate: [["beam_size", "", "int"], ["nbest", "", "int"]],
  "fill-mask": [["top_k", 5, "int"]],
  classify: [],
  answer: [["n_best", 3, "int"]],
};

function endpointName() { return state.info.endpoint.replace("/v1/", ""); }

async function start() {
  state.info = await (await fetch("/v1/info")).json();
  const i = state.info;
  $("model").textContent = `${i.task} model · ${i.encoder} encoder · ${i.attention} attention · ` +
    `${(i.parameters / 1e6).toFixed(2)}M parameters · POST ${i.endpoint}`;
  const name = endpointName();
  $("qa-fields").hidden = name !== "answer";
  $("text").hidden = $("text-label").hidden = name === "answer";
  if (name === "fill-mask") $("text").placeholder = "a sentence with <mask> in it";
  if (name === "classify") $("text").placeholder = "a text (a tab separates the two texts of a pair)";
  for (const [key, value] of OPTIONS[name] || []) {
    const label = document.createElement("label");
    label.textContent = key + " ";
    const input = document.createElement("input");
    input.id = "opt-" + key; input.value = value; input.dataset.type = OPTIONS[name].find((o) => o[0] === key)[2];
    label.appendChild(input);
    $("options").appendChild(label);
  }
  $("form").addEventListener("submit", (event) => { event.preventDefault(); submit(); });
  for (const id of ["map", "layer", "head"]) $(id).addEventListener("change", () => { if (id === "map") fillSelectors(); draw(); });
}

function requestBody() {
  const name = endpointName();
  const body = { need_weights: true };
  if (name === "answer") { body.question = $("question").value; body.context = $("context").value; }
  else body.text = $("text").value;
  for (const [key] of OPTIONS[name] || []) {
    const input = $("opt-" + key);
    if (input.value === "") continue;
    body[key] = input.dataset.type === "int" ? parseInt(input.value, 10) : parseFloat(input.value);
  }
  return body;
}

async function submit() {
  $("status").textContent = "";
  $("heatmap").dataset.ready = "false";
  const response = await fetch(state.info.endpoint, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(requestBody()),
  });
  const data = await response.json();
  if (!response.ok) { $("status").textContent = `${response.status}: ${data.error}`; return; }
  state.result = data.results[0];
  showPrediction(state.result);
  buildMaps(state.result.attention || {});
  fillSelectors();
  draw();
}

function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; }

function showPrediction(r) {
  const box = $("prediction");
  box.replaceChildren();
  const name = endpointName();
  if (name === "classify") {
    box.appendChild(el("p", `label: ${r.label}`, "answer"));
    for (const [label, p] of Object.entries(r.probabilities)) {
      const bar = el("div", undefined, "bar");
      bar.appendChild(el("span", label));
      const fill = el("span", undefined, "fill"); fill.style.width = `${Math.round(200 * p)}px`;
      bar.appendChild(fill); bar.appendChild(el("span", p.toFixed(3)));
      box.appendChild(bar);
    }
  } else if (name === "generate") {
    const p = el("p", r.prompt); p.appendChild(el("strong", r.generated, "answer")); box.appendChild(p);
  } else if (name === "translate") {
    box.appendChild(el("p", r.translation, "answer"));
    for (const h of (r.nbest || []).slice(1)) box.appendChild(el("p", `${h.translation} (${h.score.toFixed(3)})`));
  } else if (name === "fill-mask") {
    for (const f of r.fills) box.appendChild(el("p", `position ${f.position}: ` + f.candidates.map((c) => `${c.token} ${c.p.toFixed(3)}`).join(", "), "answer"));
  } else if (name === "answer") {
    box.appendChild(el("p", r.answer ? `${r.answer} (p=${r.probability.toFixed(3)})` : "(no answer found)", "answer"));
  }
}

// Each map: {name, rows (token strings), cols, layers: [layer][head][row][col]}.
function buildMaps(a) {
  state.maps = [];
  const tokens = a.tokens || a.source_tokens;
  if (a.alignment) state.maps.push({ name: "alignment (target → source)", rows: a.target_tokens, cols: a.source_tokens, layers: [[a.alignment]] });
  if (a.pooling) state.maps.push({ name: "pooling weights", rows: ["pooled"], cols: tokens, layers: [[[a.pooling]]] });
  if (a.layers && a.layers.length) state.maps.push({ name: "self-attention", rows: tokens, cols: tokens, layers: a.layers });
  if (a.question_attention) state.maps.push({ name: "context → question", rows: tokens, cols: tokens, layers: [[a.question_attention]] });
  $("explorer").hidden = state.maps.length === 0;
  const select = $("map");
  select.replaceChildren(...state.maps.map((m, i) => { const o = el("option", m.name); o.value = i; return o; }));
  const self = state.maps.findIndex((m) => m.name === "self-attention");
  select.value = String(state.maps.length > 1 && self >= 0 && !a.alignment && !a.pooling ? self : 0);
}

function fillSelectors() {
  const map = state.maps[+$("map").value];
  if (!map) return;
  const options = (n, prefix) => Array.from({ length: n }, (_, i) => { const o = el("option", `${prefix} ${i}`); o.value = i; return o; });
  $("layer").replaceChildren(...options(map.layers.length, "layer"));
  $("layer").value = String(map.layers.length - 1);  // the last layer first: closest to the prediction
  $("head").replaceChildren(...options(map.layers[0].length, "head"));
  $("head").value = "0";
}

function color(w) {  // white → dark blue
  const t = Math.max(0, Math.min(1, w));
  const c = (a, b) => Math.round(a + (b - a) * Math.sqrt(t));
  return `rgb(${c(255, 20)}, ${c(255, 60)}, ${c(255, 140)})`;
}

function draw() {
  const map = state.maps[+$("map").value];
  const grid = $("heatmap");
  if (!map) return;
  const layer = +$("layer").value, head = +$("head").value;
  const weights = map.layers[layer][head];
  grid.replaceChildren();
  grid.style.gridTemplateColumns = `auto repeat(${map.cols.length}, 18px)`;
  grid.appendChild(el("div", "", "label"));
  map.cols.forEach((t) => grid.appendChild(el("div", t, "label col")));
  weights.forEach((row, r) => {
    const label = el("div", map.rows[r], "label row");
    label.dataset.row = r;
    label.addEventListener("mouseenter", () => showRow(map, weights, r));
    grid.appendChild(label);
    row.forEach((w, c) => {
      const cell = el("div", undefined, "cell");
      cell.style.background = color(w);
      cell.title = `${map.rows[r]} → ${map.cols[c]}: ${w}`;
      Object.assign(cell.dataset, { row: r, col: c, value: w });
      cell.addEventListener("mouseenter", () => showRow(map, weights, r));
      grid.appendChild(cell);
    });
  });
  Object.assign(grid.dataset, { map: map.name, layer, head, rows: weights.length, cols: map.cols.length, ready: "true" });
}

function showRow(map, weights, r) {
  document.querySelectorAll("#heatmap .active").forEach((e) => e.classList.remove("active"));
  document.querySelectorAll(`#heatmap [data-row="${r}"]`).forEach((e) => e.classList.add("active"));
  const table = el("table");
  weights[r].map((w, c) => [w, c]).sort((a, b) => b[0] - a[0]).forEach(([w, c]) => {
    const tr = el("tr"); tr.appendChild(el("td", map.cols[c])); tr.appendChild(el("td", w.toFixed(4))); table.appendChild(tr);
  });
  $("row").replaceChildren(el("p", `“${map.rows[r]}” attends to:`), table);
  $("row").dataset.row = r;
}

start();
