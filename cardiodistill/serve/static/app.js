// The ECG check page: upload a recording to /api/predict, show the result in plain words, the quality of
// each lead, and every lead on an ECG-paper grid (25 mm/s, 10 mm/mV) with the occlusion attribution behind it.
"use strict";

// Plain words for the outputs of the bundled CinC 2017 model; any other output is shown by its name.
const WORDS = {
  normal: "Normal sinus rhythm",
  af: "Atrial fibrillation",
  other: "Another rhythm (neither normal nor atrial fibrillation)",
  noisy: "Too noisy to read",
};
const SPEED_MM_S = 25;  // paper speed
const GAIN_MM_MV = 10;  // paper gain
const ROW_MM = 22;  // height of one lead's strip
const LEFT_MM = 10;  // left margin: lead name and the 1 mV calibration pulse
const MAX_SHOWN_S = 60;  // longest part of a recording drawn
const SVG_NS = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);
const words = (name) => WORDS[name] || name;
const percent = (p) => (p === null || p === undefined ? "n/a" : `${Math.round(100 * p)} %`);

function el(tag, attrs = {}, text = "") {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG_NS, tag.slice(4)) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text) node.textContent = text;
  return node;
}

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function loadModel() {
  try {
    const response = await fetch("/api/model");
    const m = await response.json();
    $("model").textContent = `Model ${m.model_id} ${m.version} (${m.precision}): reads lead${m.leads.length > 1 ? "s" : ""} `
      + `${m.leads.join(", ")}, ${m.seconds} s windows at ${m.fs} Hz.`;
  } catch (err) {
    $("model").textContent = "The service does not answer.";
  }
}

async function upload(files) {
  if (!files.length) return;
  document.body.dataset.state = "busy";
  setStatus(`Reading ${Array.from(files, (f) => f.name).join(", ")}...`);
  const form = new FormData();
  for (const file of files) form.append("files", file, file.name);
  try {
    const response = await fetch("/api/predict?tracing=true&explain=true", { method: "POST", body: form });
    const body = await response.json();
    if (!response.ok) {
      $("result").hidden = true;
      $("tracing-section").hidden = true;
      setStatus(body.detail || `The service answered ${response.status}.`, true);
      document.body.dataset.state = "error";
      return;
    }
    setStatus("");
    render(body);
    document.body.dataset.state = "done";
  } catch (err) {
    setStatus(`The upload failed: ${err.message}`, true);
    document.body.dataset.state = "error";
  }
}

function probabilitiesOf(result) {
  return result.class_probabilities || result.probabilities || {};
}

function render(body) {
  const r = body.result;
  const probs = probabilitiesOf(r);
  const verdict = $("verdict");
  verdict.replaceChildren();
  verdict.className = r.abstain ? "verdict abstain" : "verdict";
  if (r.abstain) {
    verdict.append(el("div", { class: "call" }, "No reading: the recording cannot be read reliably"));
    $("why").hidden = false;
    $("why").textContent = `Why: ${r.abstain_reason}. Record again with good electrode contact and the patient `
      + `still, for at least 30 s; the probabilities below are not a result.`;
  } else {
    const calls = Array.isArray(r.prediction) ? r.prediction : [r.prediction];
    const text = calls.length ? calls.map(words).join(", ") : "No finding above its threshold";
    verdict.append(el("div", { class: "call" }, text));
    if (calls.length === 1) verdict.append(el("div", { class: "prob" }, `probability ${percent(probs[calls[0]])}`));
    $("why").hidden = true;
  }
  if (r.triage_probability !== undefined) {
    verdict.append(el("div", { class: "prob" }, `triage probability ${percent(r.triage_probability)}`));
  }

  const bars = $("probabilities");
  bars.replaceChildren();
  const top = Object.keys(probs).reduce((a, b) => (probs[a] >= probs[b] ? a : b), null);
  for (const [name, p] of Object.entries(probs)) {
    const cls = name === top ? "top" : "";
    bars.append(el("span", { class: cls }, words(name)));
    const bar = el("div", { class: "bar" });
    bar.append(el("span", { style: `width:${Math.round(100 * (p || 0))}%` }));
    bars.append(bar, el("span", { class: cls }, percent(p)));
  }

  const rows = $("quality").querySelector("tbody");
  rows.replaceChildren();
  for (const [lead, q] of Object.entries(r.quality)) {
    const tr = el("tr");
    const name = el("td", {}, lead);
    if (r.derived_leads[lead]) name.append(el("span", { class: "how" }, r.derived_leads[lead]));
    tr.append(name, el("td", { class: q.usable ? "yes" : "no" }, q.usable ? "yes" : "no"),
      el("td", {}, q.issues.length ? q.issues.join(", ") : "none"),
      el("td", {}, q.amplitude_mv === null ? "n/a" : `${q.amplitude_mv.toFixed(2)} mV`));
    rows.append(tr);
  }
  $("details").textContent = `${r.file}: ${r.duration_s} s at ${r.fs_in} Hz, ${r.windows} window`
    + `${r.windows === 1 ? "" : "s"}; model ${r.model_id} ${r.model_version}; ${body.timing_ms} ms on the server.`;
  $("result").hidden = false;
  if (body.tracing) drawTracing(body.tracing, body.attribution);
}

// One SVG: for each stretch of `rowS` seconds, one strip per lead, on a 1 mm / 5 mm grid. The scale is kept at
// 25 mm/s and 10 mm/mV; `pxmm` (screen pixels per mm) is chosen so that one strip fits the screen's width.
function drawTracing(t, attribution) {
  const box = $("tracing");
  $("tracing-section").hidden = false;
  const width = Math.max(300, box.clientWidth || 300);
  const rowS = width >= 600 ? 10 : 5;
  const pxmm = Math.min(4, (width - 2) / (rowS * SPEED_MM_S + LEFT_MM));
  const shownS = Math.min(t.duration_s, MAX_SHOWN_S);
  const nRows = Math.max(1, Math.ceil(shownS / rowS - 1e-9));
  const strips = [];
  for (let k = 0; k < nRows; k++) for (const lead of t.leads) strips.push([k, lead]);
  const wMm = LEFT_MM + rowS * SPEED_MM_S;
  const hMm = strips.length * ROW_MM;
  const svg = el("svg:svg", { width: Math.ceil(wMm * pxmm), height: Math.ceil(hMm * pxmm),
    viewBox: `0 0 ${wMm} ${hMm}`, role: "img", "aria-label": `ECG tracing, ${t.leads.join(", ")}` });
  svg.append(gridDefs());
  svg.append(el("svg:rect", { x: LEFT_MM, y: 0, width: wMm - LEFT_MM, height: hMm, fill: "url(#grid5)" }));

  const track = attributionTracks(attribution);
  strips.forEach(([k, lead], i) => {
    const y0 = i * ROW_MM + ROW_MM / 2;  // the strip's 0 mV line
    const t0 = k * rowS;
    const t1 = Math.min(t0 + rowS, shownS);
    if (track[lead]) svg.append(attributionLayer(track[lead], t0, t1, i * ROW_MM));
    const row = t.mv[t.leads.indexOf(lead)];
    const first = Math.round(t0 * t.fs);
    const last = Math.min(row.length, Math.round(t1 * t.fs));
    let d = "";
    for (let s = first; s < last; s++) {
      const x = LEFT_MM + (s / t.fs - t0) * SPEED_MM_S;
      const y = y0 - row[s] * GAIN_MM_MV;
      d += `${s === first ? "M" : "L"}${x.toFixed(2)} ${y.toFixed(2)}`;
    }
    svg.append(el("svg:path", { class: "trace", d, "vector-effect": "non-scaling-stroke", "data-lead": lead }));
    // calibration pulse: 1 mV (10 mm) for 0.2 s (5 mm)
    svg.append(el("svg:path", { class: "cal", "vector-effect": "non-scaling-stroke",
      d: `M1 ${y0} H3 V${y0 - GAIN_MM_MV} H8 V${y0} H${LEFT_MM}` }));
    svg.append(el("svg:text", { class: "label", x: LEFT_MM + 1, y: i * ROW_MM + 3.5, "font-size": 3 }, lead));
    svg.append(el("svg:text", { class: "time", x: wMm - 1, y: i * ROW_MM + 3.5, "font-size": 2.4,
      "text-anchor": "end" }, `${t0}-${t1} s`));
  });
  box.replaceChildren(svg);
  const cut = t.duration_s > MAX_SHOWN_S ? ` Showing the first ${MAX_SHOWN_S} s of ${t.duration_s} s.` : "";
  $("scale").textContent = `25 mm/s, 10 mm/mV: small squares 1 mm (0.04 s, 0.1 mV), large squares 5 mm `
    + `(0.2 s, 0.5 mV); the pulse at the start of each strip is 1 mV. Filter: ${t.filter}.${cut}`;
  $("attribution-note").textContent = attribution
    ? `Orange: the parts of lead ${attribution.leads.join(", ")} the model relied on most for `
      + `"${words(attribution.output)}": hiding ${attribution.segment_s} s there lowers that probability, by more where `
      + `the colour is stronger (at most by ${Math.round(100 * Math.max(...attribution.drop.flat()))} percentage points).`
    : "";
}

function gridDefs() {
  const defs = el("svg:defs");
  const minor = el("svg:pattern", { id: "grid1", width: 1, height: 1, patternUnits: "userSpaceOnUse" });
  minor.append(el("svg:path", { d: "M1 0 V1 H0", fill: "none", stroke: "#f4c7c7", "stroke-width": 0.08 }));
  const major = el("svg:pattern", { id: "grid5", width: 5, height: 5, patternUnits: "userSpaceOnUse" });
  major.append(el("svg:rect", { width: 5, height: 5, fill: "url(#grid1)" }));
  major.append(el("svg:path", { d: "M5 0 V5 H0", fill: "none", stroke: "#e58f8f", "stroke-width": 0.18 }));
  defs.append(minor, major);
  return defs;
}

// Only the parts that supported the result are shaded, each by its drop relative to the largest one.
function attributionTracks(a) {
  if (!a) return {};
  const peak = Math.max(1e-6, ...a.drop.flat());
  const tracks = {};
  a.leads.forEach((lead, i) => { tracks[lead] = { times: a.times_s, drop: a.drop[i], bin: a.bin_s, peak }; });
  return tracks;
}

function attributionLayer(tr, t0, t1, top) {
  const g = el("svg:g", { class: "attribution" });
  tr.times.forEach((time, j) => {
    const v = tr.drop[j] / tr.peak;
    if (time + tr.bin <= t0 || time >= t1 || v < 0.15) return;
    const a = Math.max(time, t0);
    const b = Math.min(time + tr.bin, t1);
    g.append(el("svg:rect", { x: LEFT_MM + (a - t0) * SPEED_MM_S, y: top, width: (b - a) * SPEED_MM_S,
      height: ROW_MM, fill: "#ff8c1a", "fill-opacity": (0.6 * v).toFixed(3) }));
  });
  return g;
}

function setup() {
  $("file").addEventListener("change", (e) => upload(e.target.files));
  const drop = $("drop");
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (e) => upload(e.dataTransfer.files));
  loadModel();
}

setup();
