// The page of `hf-mtl serve`: built from /info, it sends the text to /predict_all (every head, one encoder pass)
// and the single-label heads' full score lists from /heads/<task>/predict; plain DOM, no build step, no network
// beyond this server.
"use strict";

const $ = (id) => document.getElementById(id);
let info = null;

async function call(path, body) {
  const response = await fetch(path, body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const payload = await response.json().catch(() => null);
  if (!response.ok) {
    const message = payload && payload.error ? payload.error : response.statusText;
    throw new Error(`${path}: ${response.status} ${message}`);
  }
  return payload;
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "style") node.style.cssText = value; else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function showError(error) {
  const box = $("error");
  box.textContent = error ? String(error.message || error) : "";
  box.hidden = !error;
}

function hue(type) {
  let hash = 0;
  for (const char of type) hash = (hash * 31 + char.charCodeAt(0)) % 360;
  return hash;
}

function scoreBars(predictions, top = 5) {
  const rows = predictions.slice(0, top).map((prediction, index) => element("div",
    { class: "bar-row" + (index === 0 ? " best" : ""), "data-label": prediction.label },
    element("span", { class: "label" }, prediction.label),
    element("span", { class: "bar", role: "meter", "aria-valuemin": "0", "aria-valuemax": "1",
                      "aria-valuenow": prediction.score.toFixed(3), "aria-label": prediction.label },
            element("span", { style: `width:${(100 * prediction.score).toFixed(1)}%` })),
    element("span", { class: "score" }, prediction.score.toFixed(3))));
  return element("div", { class: "bars" }, ...rows);
}

function highlighted(text, entities) {
  // Spans come from the character offsets; entities never overlap and arrive in text order.
  const out = element("p", { class: "tagged" });
  let at = 0;
  for (const entity of entities) {
    out.append(text.slice(at, entity.start));
    const type = entity.entity;
    out.append(element("mark", { class: "entity", "data-type": type, style: `--hue:${hue(type)}`,
                                 title: `${type} ${entity.score.toFixed(3)}` },
                       text.slice(entity.start, entity.end), element("span", { class: "type" }, type)));
    at = entity.end;
  }
  out.append(text.slice(at));
  return out;
}

function renderHead(task, output, fullScores) {
  const section = element("div", { class: "head", "data-task": task.name, "data-kind": task.kind },
    element("h3", {}, task.name + " ", element("span", { class: "kind" }, task.kind.replace(/_/g, " "))));
  if (task.kind === "sentence_similarity") {
    // A bi-encoder scores a pair: the cosine of the two texts' own embeddings.
    section.append(output === undefined
      ? element("p", { class: "muted" }, "type a second text to score the pair")
      : element("span", { class: "value" }, `cosine ${output.score.toFixed(3)}`));
  } else if (task.kind === "token_classification") {
    section.append(output.length ? highlighted(fullScores.text, output) : element("p", { class: "muted" }, "no entities"));
  } else if (task.kind === "regression") {
    section.append(element("span", { class: "value" }, output.score.toFixed(3)));
  } else if (task.kind === "multi_label_classification") {
    section.append(output.length
      ? element("div", {}, ...output.map((p) => element("span", { class: "chip", "data-label": p.label },
                                                       `${p.label} ${p.score.toFixed(2)}`)))
      : element("p", { class: "muted" }, "no label over the threshold"));
  } else {
    section.append(scoreBars(fullScores[task.name] || [output]));
  }
  return section;
}

async function predict(event) {
  event.preventDefault();
  const text = $("text").value;
  const pair = $("text-pair").value;
  if (!text.trim()) { showError("Type a text first."); return; }
  const input = pair.trim() ? { text, text_pair: pair } : text;
  $("predict-button").disabled = true;
  showError(null);
  try {
    const single = info.tasks.filter((task) => task.kind === "single_label_classification");
    const sequence = pair.trim() ? [text, pair] : text;
    const [output, ...scores] = await Promise.all([
      call("/predict_all", { inputs: input }),
      ...single.map((task) => call(`/heads/${encodeURIComponent(task.name)}/predict`, { inputs: sequence })),
    ]);
    const fullScores = { text };
    single.forEach((task, index) => { fullScores[task.name] = scores[index]; });
    $("results").replaceChildren(...info.tasks.map((task) => renderHead(task, output[task.name], fullScores)));
  } catch (error) {
    showError(error);
  } finally {
    $("predict-button").disabled = false;
  }
}

async function compare(event) {
  event.preventDefault();
  showError(null);
  try {
    const [score] = await call("/similarity", { inputs: { source_sentence: $("sim-a").value, sentences: [$("sim-b").value] } });
    $("similarity").textContent = `cosine similarity: ${score.toFixed(3)}`;
  } catch (error) {
    showError(error);
  }
}

async function start() {
  $("predict-form").addEventListener("submit", predict);
  $("similarity-form").addEventListener("submit", compare);
  $("text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("predict-form").requestSubmit();
  });
  for (let attempt = 0; ; attempt++) {
    try {
      info = await call("/info");
      break;
    } catch (error) {  // 503 while the model loads: try again
      if (attempt > 120) { showError(error); return; }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
  $("model-name").textContent = info.model_id;
  $("model-summary").textContent = `${info.tasks.map((t) => `${t.name} (${t.kind.replace(/_/g, " ")})`).join(", ")}`
    + ` · ${info.backend}, ${info.model_dtype}`;
  $("pair-field").hidden = !info.tasks.some((task) => task.kind !== "token_classification");
  $("text").focus();
}

start();
