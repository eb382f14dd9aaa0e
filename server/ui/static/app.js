// The lgrun web page: graphs, threads, checkpoints and time travel over the
// server's own Agent Server API (the one the LangGraph SDK speaks). Plain
// JavaScript, no build step; see docs/ui.md.
"use strict";

const S = {
  assistants: [],          // from /assistants/search
  graphs: {},              // assistant_id -> {graph, schemas}
  threads: [],             // from /threads/search
  costs: {},               // thread_id -> totals of its head checkpoint
  thread: null,            // the open thread
  head: null,              // its head state
  history: [],             // its checkpoints, newest first
  runs: [],                // its runs
  selected: null,          // checkpoint id shown
  tab: "state",
  live: null,              // {tid, log:[], node, done:Set, status}
  apiKey: localStorage.getItem("lgrun-api-key") || "",
};

// ---------- helpers ----------

function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else if (v === true) e.setAttribute(k, "");
    else e.setAttribute(k, v);
  }
  for (const c of kids.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const SVGNS = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...kids) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) e.setAttribute(k, v);
  }
  for (const c of kids.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function $(id) { return document.getElementById(id); }
function json(v) { return JSON.stringify(v, null, 2); }
function short(id) { return id ? String(id).slice(0, 8) : ""; }
function ago(ts) {
  if (!ts) return "";
  const d = (Date.now() - Date.parse(ts)) / 1000;
  if (d < 60) return Math.max(0, Math.round(d)) + " s ago";
  if (d < 3600) return Math.round(d / 60) + " min ago";
  if (d < 86400) return Math.round(d / 3600) + " h ago";
  return new Date(ts).toLocaleString();
}
function money(c) {
  if (!c) return "$0";
  return c < 0.01 ? "$" + c.toFixed(6) : "$" + c.toFixed(4);
}
function isMessages(v) {
  return Array.isArray(v) && v.length > 0 && v.every(m => m && typeof m === "object" && ("content" in m) && ("role" in m || "type" in m));
}

class APIError extends Error {
  constructor(status, msg) { super(msg); this.status = status; }
}

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (S.apiKey) headers["x-api-key"] = S.apiKey;
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = text; }
  if (!r.ok) {
    if (r.status === 401) $("key-form").hidden = false;
    const msg = data && data.message ? data.message : (typeof data === "string" ? data : r.statusText);
    throw new APIError(r.status, msg);
  }
  return data;
}

function banner(msg, kind) {
  const b = $("banner");
  if (!msg) { b.hidden = true; b.textContent = ""; return; }
  b.hidden = false;
  b.className = "banner " + (kind || "error");
  b.replaceChildren(h("span", {}, msg), h("button", { class: "small", type: "button", onclick: () => banner(null) }, "Dismiss"));
}

function guard(f) {
  return async (...a) => {
    try { await f(...a); } catch (e) { banner(e.message || String(e)); }
  };
}

// ---------- data ----------

async function loadAssistants() {
  S.assistants = await api("POST", "/assistants/search", { limit: 100 });
  S.assistants.sort((a, b) => a.graph_id.localeCompare(b.graph_id) || a.name.localeCompare(b.name));
}

async function graphOf(aid) {
  if (!S.graphs[aid]) {
    const [graph, schemas] = await Promise.all([
      api("GET", "/assistants/" + aid + "/graph"),
      api("GET", "/assistants/" + aid + "/schemas"),
    ]);
    S.graphs[aid] = { graph, schemas };
  }
  return S.graphs[aid];
}

function assistantFor(graphID) {
  return S.assistants.find(a => a.graph_id === graphID && a.metadata && a.metadata.created_by === "system") ||
    S.assistants.find(a => a.graph_id === graphID);
}

async function loadThreads() {
  const body = { limit: 100, sort_by: "updated_at", sort_order: "desc" };
  const st = $("status-filter").value;
  if (st) body.status = st;
  S.threads = await api("POST", "/threads/search", body);
  renderThreads();
  // Costs come from each thread's head checkpoint.
  await Promise.all(S.threads.slice(0, 50).map(async t => {
    if (S.costs[t.thread_id] && S.costs[t.thread_id].at === t.updated_at) return;
    try {
      const st = await api("GET", "/threads/" + t.thread_id + "/state");
      S.costs[t.thread_id] = { at: t.updated_at, totals: (st.metadata && st.metadata.totals) || {} };
    } catch (e) { /* a thread deleted meanwhile */ }
  }));
  renderThreads();
}

async function loadThread(tid) {
  const [thread, head, history, runs] = await Promise.all([
    api("GET", "/threads/" + tid),
    api("GET", "/threads/" + tid + "/state"),
    api("POST", "/threads/" + tid + "/history", { limit: 1000 }),
    api("GET", "/threads/" + tid + "/runs?limit=20"),
  ]);
  S.thread = thread; S.head = head; S.history = history; S.runs = runs;
  const gid = thread.metadata && thread.metadata.graph_id;
  const a = gid && assistantFor(gid);
  if (a) await graphOf(a.assistant_id);
  if (!S.selected || !history.some(c => c.checkpoint.checkpoint_id === S.selected)) {
    S.selected = head.checkpoint && head.checkpoint.checkpoint_id;
  }
}

// ---------- routing ----------

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  return { kind: parts[0] || "", id: parts[1] || "", sub: parts[2] || "" };
}

const render = guard(async function render() {
  const r = route();
  renderGraphsList(r);
  if (r.kind === "thread" && r.id) {
    if (!S.thread || S.thread.thread_id !== r.id) {
      S.selected = r.sub || null; S.tab = "state";
      await loadThread(r.id);
    } else if (r.sub) S.selected = r.sub;
    renderThread();
  } else if (r.kind === "graph" && r.id) {
    S.thread = null;
    await graphOf(r.id);
    renderGraphView(r.id);
  } else {
    S.thread = null;
    renderHome();
  }
  renderThreads();
});

// ---------- side bar ----------

function renderGraphsList(r) {
  $("graphs").replaceChildren(...S.assistants.map(a => h("li", {},
    h("a", { href: "#/graph/" + a.assistant_id, class: r.kind === "graph" && r.id === a.assistant_id ? "current" : null,
      "aria-current": r.kind === "graph" && r.id === a.assistant_id ? "page" : null },
      h("span", { class: "name" }, a.name),
      a.name !== a.graph_id ? h("span", { class: "muted" }, " (" + a.graph_id + ")") : null))));
}

function statusPill(st) { return h("span", { class: "pill st-" + st }, st); }

function renderThreads() {
  const q = $("thread-search").value.trim().toLowerCase();
  const cur = S.thread && S.thread.thread_id;
  const list = S.threads.filter(t => !q || t.thread_id.toLowerCase().includes(q));
  const items = list.map(t => {
    const tot = S.costs[t.thread_id] && S.costs[t.thread_id].totals;
    const gid = (t.metadata && t.metadata.graph_id) || "—";
    return h("li", {}, h("a", { href: "#/thread/" + t.thread_id, class: t.thread_id === cur ? "current" : null,
      "aria-current": t.thread_id === cur ? "page" : null, "data-thread": t.thread_id },
      h("span", { class: "row1" }, h("code", {}, short(t.thread_id)), statusPill(t.status)),
      h("span", { class: "row2 muted" }, gid, " · ", ago(t.updated_at), " · ", tot ? money(tot.cost) : "…")));
  });
  if (!items.length) items.push(h("li", { class: "muted empty" }, q || $("status-filter").value ? "No thread matches." : "No threads yet: start a run from a graph."));
  $("threads").replaceChildren(...items);
}

// ---------- graph drawing ----------

// layout places the nodes in layers top to bottom: a node's layer is the
// longest path to it from __start__ over the edges that are not back edges.
function layout(graph) {
  const ids = graph.nodes.map(n => n.id);
  const out = {};
  ids.forEach(i => out[i] = []);
  graph.edges.forEach(e => { if (out[e.source]) out[e.source].push(e.target); });
  const back = new Set(), state = {};
  const dfs = v => {
    state[v] = 1;
    for (const w of out[v] || []) {
      if (state[w] === 1) back.add(v + "\u0000" + w);
      else if (!state[w]) dfs(w);
    }
    state[v] = 2;
  };
  dfs("__start__");
  ids.forEach(i => { if (!state[i]) dfs(i); });
  const rank = {};
  ids.forEach(i => rank[i] = 0);
  for (let pass = 0; pass < ids.length; pass++) {
    let changed = false;
    graph.edges.forEach(e => {
      if (back.has(e.source + "\u0000" + e.target) || e.source === e.target) return;
      if (rank[e.target] < rank[e.source] + 1) { rank[e.target] = rank[e.source] + 1; changed = true; }
    });
    if (!changed) break;
  }
  const maxRank = Math.max(0, ...ids.filter(i => i !== "__end__").map(i => rank[i]));
  rank["__end__"] = Math.max(rank["__end__"] || 0, maxRank + 1);
  const layers = [];
  ids.forEach(i => (layers[rank[i]] = layers[rank[i]] || []).push(i));
  return { rank, layers: layers.filter(Boolean), back };
}

function drawGraph(graph, marks) {
  marks = marks || {};
  const L = layout(graph);
  const W = 150, H = 40, GX = 60, GY = 70;
  const widest = Math.max(...L.layers.map(l => l.length));
  // Room on the left for edges that skip layers, on the right for back edges.
  const LM = 110, RM = 240;
  const width = Math.max(500, widest * (W + GX) - GX + LM + RM);
  const pos = {};
  L.layers.forEach((layer, y) => {
    const total = layer.length * W + (layer.length - 1) * GX;
    layer.forEach((id, x) => {
      pos[id] = { x: LM + (width - LM - RM) / 2 - total / 2 + x * (W + GX), y: 20 + y * (H + GY) };
    });
  });
  const leftOf = id => graph.nodes.find(n => n.id === id && n.type === "schema") ? pos[id].x + W / 2 - 45 : pos[id].x;
  const minX = Math.min(...Object.values(pos).map(p => p.x));
  const height = 20 + L.layers.length * (H + GY) - GY + 30;
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "graph", role: "img",
    "aria-label": "Graph: " + graph.nodes.filter(n => n.type !== "schema").map(n => n.id).join(", ") });
  svg.append(s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
    s("path", { d: "M0,0 L10,5 L0,10 z", class: "arrowhead" }))));
  const edges = s("g", {}), labels = s("g", {});
  let loopN = 0, skipN = 0;
  graph.edges.forEach(e => {
    const a = pos[e.source], b = pos[e.target];
    if (!a || !b) return;
    let d, lx, ly, left = false;
    if (e.source === e.target) {
      const x = a.x + W, y = a.y + H / 2;
      d = `M${x},${y - 10} C${x + 55},${y - 34} ${x + 55},${y + 34} ${x + 2},${y + 10}`;
      lx = x + 50; ly = y; left = true;
    } else if (L.back.has(e.source + "\u0000" + e.target) || b.y <= a.y) {
      loopN++;
      const off = 40 + 18 * loopN;
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x + W, y2 = b.y + H / 2;
      const xr = Math.max(x1, x2) + off;
      d = `M${x1},${y1} C${xr},${y1} ${xr},${y2} ${x2 + 2},${y2}`;
      lx = xr - 8; ly = (y1 + y2) / 2;
    } else if (L.rank[e.target] - L.rank[e.source] > 1 && L.layers.slice(L.rank[e.source] + 1, L.rank[e.target]).some(l => l.some(id => Math.abs(pos[id].x - (a.x + b.x) / 2) < W))) {
      // Skips layers with nodes in the way: go around them on the left.
      skipN++;
      const xl = minX - 30 - 16 * skipN;
      const x1 = leftOf(e.source), y1 = a.y + H / 2, x2 = leftOf(e.target), y2 = b.y + H / 2;
      d = `M${x1},${y1} C${xl},${y1} ${xl},${y2} ${x2 - 2},${y2}`;
      lx = xl + 18; ly = (y1 + y2) / 2;
    } else {
      const x1 = a.x + W / 2, y1 = a.y + H, x2 = b.x + W / 2, y2 = b.y;
      const my = (y1 + y2) / 2;
      d = `M${x1},${y1} C${x1},${my} ${x2},${my} ${x2},${y2 - 2}`;
      // Labels sit near the target, so two routes from one node do not overlap.
      lx = x1 + (x2 - x1) * 0.85; ly = y1 + (y2 - y1) * 0.72;
    }
    const live = marks.edges && marks.edges.has(e.source + ">" + e.target);
    edges.append(s("path", { d, class: "edge" + (e.conditional ? " cond" : "") + (live ? " taken" : ""), "marker-end": "url(#arrow)" },
      s("title", {}, `${e.source} → ${e.target}` + (e.data ? ` when ${e.data}` : ""))));
    if (e.conditional && e.data) {
      const text = e.data.length > 30 ? e.data.slice(0, 29) + "…" : e.data;
      const g = s("g", { class: "elabel" }, s("title", {}, e.data));
      const tw = text.length * 6.8 + 12;
      if (left) lx += tw / 2;
      g.append(s("rect", { x: lx - tw / 2, y: ly - 9, width: tw, height: 17, rx: 4 }));
      g.append(s("text", { x: lx, y: ly + 4, "text-anchor": "middle" }, text));
      labels.append(g);
    }
  });
  svg.append(edges);
  const nodes = s("g", {});
  graph.nodes.forEach(n => {
    const p = pos[n.id];
    const schema = n.type === "schema";
    const cls = ["node", schema ? "terminal" : "",
      marks.active === n.id ? "active" : "",
      marks.done && marks.done.has(n.id) ? "done" : "",
      marks.next && marks.next.includes(n.id) ? "next" : ""].filter(Boolean).join(" ");
    const g = s("g", { class: cls, "data-node": n.id });
    const label = schema ? (n.id === "__start__" ? "START" : "END") : n.id;
    const kind = !schema && n.data && n.data.kind ? n.data.kind : "";
    if (schema) g.append(s("rect", { x: p.x + W / 2 - 45, y: p.y + 4, width: 90, height: H - 8, rx: 16 }));
    else g.append(s("rect", { x: p.x, y: p.y, width: W, height: H, rx: 7 }));
    g.append(s("text", { x: p.x + W / 2, y: p.y + (kind ? 17 : 25), "text-anchor": "middle", class: "nname" }, label));
    if (kind) g.append(s("text", { x: p.x + W / 2, y: p.y + 32, "text-anchor": "middle", class: "nkind" }, kind));
    g.append(s("title", {}, label + (kind ? " (" + kind + ")" : "") + (marks.active === n.id ? " — running" : "")));
    nodes.append(g);
  });
  svg.append(nodes, labels);
  return svg;
}

function graphLegend() {
  return h("p", { class: "legend muted" },
    h("span", { class: "lg solid" }), " edge ", h("span", { class: "lg dashed" }), " conditional route (labelled with its condition) ",
    h("span", { class: "lg box active" }), " running ", h("span", { class: "lg box next" }), " next ", h("span", { class: "lg box done" }), " finished in this run");
}

// ---------- home and graph views ----------

function renderHome() {
  const cards = S.assistants.map(a => h("article", { class: "card" },
    h("h3", {}, h("a", { href: "#/graph/" + a.assistant_id }, a.name)),
    h("p", { class: "muted" }, a.description || "")));
  $("view").replaceChildren(h("h1", {}, "Graphs"),
    h("p", { class: "muted" }, "Pick a graph to see it drawn and to start a run, or open a thread on the left to travel through its checkpoints."),
    h("div", { class: "cards" }, cards));
}

function renderGraphView(aid) {
  const a = S.assistants.find(x => x.assistant_id === aid);
  const g = S.graphs[aid];
  $("view").replaceChildren(...[
    h("h1", {}, a ? a.name : aid),
    a && a.description ? h("p", { class: "muted desc" }, a.description) : null,
    h("div", { class: "cols graphcols" },
      h("section", { class: "panel" }, h("h2", {}, "Graph"), h("div", { id: "graph-box", class: "graph-box" }, drawGraph(g.graph)), graphLegend()),
      h("section", { class: "panel" }, h("h2", {}, "Start a run"), runForm(aid, null)))].filter(Boolean));
}

// runForm builds the input form from the graph's state schema.
function runForm(aid, tid) {
  const g = S.graphs[aid];
  const props = (g.schemas.input_schema && g.schemas.input_schema.properties) || {};
  const fields = [];
  const form = h("form", { class: "runform", id: "run-form" });
  const rows = Object.entries(props).map(([name, p]) => {
    const id = "in-" + name;
    let input;
    const def = p.default;
    if (p.type === "boolean") input = h("input", { id, type: "checkbox", checked: def === true });
    else if (p.type === "integer" || p.type === "number") input = h("input", { id, type: "number", step: p.type === "integer" ? "1" : "any", value: def ?? "" });
    else if (p.type === "string") input = h("input", { id, type: "text", value: def ?? "" });
    else input = h("textarea", { id, rows: Array.isArray(def) && def.length ? 4 : 2, spellcheck: "false", class: "mono" }, json(def ?? null));
    fields.push({ name, p, input });
    return h("div", { class: "field" }, h("label", { for: id }, name, h("span", { class: "muted type" }, " " + (p.type || "any"))),
      input, p.description ? h("small", { class: "muted" }, p.description) : null);
  });
  const raw = h("textarea", { id: "run-raw", rows: 8, class: "mono", spellcheck: "false", hidden: true, "aria-label": "Raw JSON input" });
  const rawToggle = h("input", { id: "run-raw-toggle", type: "checkbox" });
  const limit = h("input", { id: "run-limit", type: "number", min: "1", placeholder: "graph default" });
  const cost = h("input", { id: "run-cost", type: "number", min: "0", step: "any", placeholder: "none" });
  const gnodes = g.graph.nodes.filter(n => n.type !== "schema").map(n => n.id);
  const before = h("select", { id: "run-before", multiple: true, size: Math.min(4, gnodes.length) }, gnodes.map(n => h("option", { value: n }, n)));
  const collect = () => {
    const input = {};
    for (const f of fields) {
      let v;
      if (f.p.type === "boolean") v = f.input.checked;
      else if (f.p.type === "integer" || f.p.type === "number") { if (f.input.value === "") continue; v = Number(f.input.value); }
      else if (f.p.type === "string") v = f.input.value;
      else {
        try { v = JSON.parse(f.input.value); } catch (e) { throw new Error(`field ${f.name}: not valid JSON (${e.message})`); }
      }
      if (JSON.stringify(v) !== JSON.stringify(f.p.default ?? (f.p.type === "string" ? "" : undefined))) input[f.name] = v;
    }
    return input;
  };
  rawToggle.addEventListener("change", guard(async () => {
    if (rawToggle.checked) { raw.value = json(collect()); }
    raw.hidden = !rawToggle.checked;
    rows.forEach(r => r.hidden = rawToggle.checked);
  }));
  form.addEventListener("submit", guard(async ev => {
    ev.preventDefault();
    let input;
    if (rawToggle.checked) {
      try { input = JSON.parse(raw.value || "{}"); } catch (e) { throw new Error("raw input: not valid JSON (" + e.message + ")"); }
    } else input = collect();
    const body = { assistant_id: aid, input, stream_mode: ["values", "updates", "debug"] };
    const cfg = {};
    if (limit.value) cfg.recursion_limit = Number(limit.value);
    if (cost.value) cfg.configurable = { max_cost_usd: Number(cost.value) };
    if (Object.keys(cfg).length) body.config = cfg;
    const bp = [...before.selectedOptions].map(o => o.value);
    if (bp.length) body.interrupt_before = bp;
    let thread = tid;
    if (!thread) {
      const t = await api("POST", "/threads", { metadata: { graph_id: g.schemas.graph_id } });
      thread = t.thread_id;
    }
    await startRun(thread, aid, body);
  }));
  form.append(...rows, raw,
    h("div", { class: "field inline" }, rawToggle, h("label", { for: "run-raw-toggle" }, "Edit the input as raw JSON")),
    h("details", { class: "opts" }, h("summary", {}, "Limits and breakpoints"),
      h("div", { class: "field" }, h("label", { for: "run-limit" }, "Step limit (recursion_limit)"), limit),
      h("div", { class: "field" }, h("label", { for: "run-cost" }, "Budget in USD (max_cost_usd)"), cost),
      h("div", { class: "field" }, h("label", { for: "run-before" }, "Pause before nodes (interrupt_before)"), before)),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", id: "run-submit" }, tid ? "Run on this thread" : "Start run")));
  return form;
}

// ---------- runs and streaming ----------

// startRun streams a run on a thread (POST …/runs/stream, read as an SSE
// stream), shows its events live and reloads the thread when it ends.
async function startRun(tid, aid, body) {
  banner(null);
  body.stream_mode = body.stream_mode || ["values", "updates", "debug"];
  S.live = { tid, aid, log: [], active: null, done: new Set(), status: "running", error: null };
  S.selected = null;
  if (location.hash !== "#/thread/" + tid) {
    S.thread = null;
    location.hash = "#/thread/" + tid;
    await new Promise(r => setTimeout(r, 0));
  }
  await loadThread(tid);
  renderThread();
  const headers = { "Content-Type": "application/json", "Accept": "text/event-stream" };
  if (S.apiKey) headers["x-api-key"] = S.apiKey;
  let resp;
  try {
    resp = await fetch("/threads/" + tid + "/runs/stream", { method: "POST", headers, body: JSON.stringify(body) });
  } catch (e) {
    S.live.status = "error"; S.live.error = { error: "NetworkError", message: e.message };
  }
  if (resp && !resp.ok) {
    let msg = resp.statusText;
    try { msg = (await resp.json()).message || msg; } catch (e) { /* not JSON */ }
    S.live.status = "error"; S.live.error = { error: "HTTP " + resp.status, message: msg };
  } else if (resp) {
    await readSSE(resp.body, (event, data) => onEvent(event, data));
  }
  if (S.live.status === "running") S.live.status = "success";
  const live = S.live;
  await refreshThread(tid);
  await loadThreads();
  if (S.live === live) S.live.finished = true;
  renderThread();
}

async function readSSE(stream, cb) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value;
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const chunk = buf.slice(0, i); buf = buf.slice(i + 2);
      let event = "message", data = "";
      for (const line of chunk.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      if (!data) continue;
      let parsed;
      try { parsed = JSON.parse(data); } catch (e) { parsed = data; }
      cb(event, parsed);
    }
  }
}

function onEvent(event, data) {
  const L = S.live;
  if (!L) return;
  if (event === "debug" && data && data.type === "task") {
    L.active = data.payload.name;
    L.log.push({ kind: "task", text: `step ${data.step}: ${data.payload.name} started` });
  } else if (event === "debug" && data && data.type === "task_result") {
    L.done.add(data.payload.name);
    if (L.active === data.payload.name) L.active = null;
    if (data.payload.error && /run cancelled/.test(data.payload.error)) L.log.push({ kind: "meta", text: `${data.payload.name} stopped: the run was cancelled` });
    else if (data.payload.error) L.log.push({ kind: "error", text: `${data.payload.name} failed: ${data.payload.error}` });
  } else if (event === "updates") {
    for (const [node, upd] of Object.entries(data || {})) {
      if (node === "__interrupt__") {
        L.interrupted = true;
        const at = (Array.isArray(upd) ? upd : []).map(i => (i.ns && i.ns[0] || "").split(":")[0] + (i.when === "before" ? " (before it runs)" : "")).join(", ");
        L.log.push({ kind: "interrupt", text: "paused at " + (at || "an interrupt") + ": waiting for you" });
      }
      else L.log.push({ kind: "update", text: `${node} wrote ${upd && typeof upd === "object" ? Object.keys(upd).join(", ") : JSON.stringify(upd)}`, detail: upd });
    }
  } else if (event === "values") {
    L.values = data;
    liveRefresh(L.tid);
  } else if (event === "metadata") {
    L.run_id = data.run_id;
    loadThreads().catch(() => {});
    L.log.push({ kind: "meta", text: "run " + short(data.run_id) + " started" });
  } else if (event === "error") {
    L.status = "error"; L.error = data;
    L.log.push({ kind: "error", text: (data.error || "error") + ": " + (data.message || "") });
  } else if (event === "end") {
    if (data && data.status && L.status !== "error") L.status = data.status;
    L.log.push({ kind: "meta", text: "run ended: " + (data && data.status) });
  }
  updateLive();
}

async function refreshThread(tid) {
  S.selected = null;
  await loadThread(tid);
}

function updateLive() {
  const box = $("live");
  if (box) box.replaceWith(livePanel());
  const gb = $("thread-graph");
  if (gb) gb.replaceChildren(threadGraph());
}

function livePanel() {
  const L = S.live;
  if (!L || !S.thread || L.tid !== S.thread.thread_id) return h("div", { id: "live", hidden: true });
  const running = L.status === "running";
  return h("section", { id: "live", class: "panel live" + (L.finished ? " finished" : ""), "aria-live": "polite" },
    h("h2", {}, running ? "Run in progress" : "Last run: " + (L.status === "success" && L.interrupted ? "paused at an interrupt" : L.status === "interrupted" && !L.interrupted ? "cancelled" : L.status),
      running && L.run_id ? h("button", { class: "small danger", type: "button", id: "cancel-run",
        onclick: guard(() => api("POST", `/threads/${L.tid}/runs/${L.run_id}/cancel?action=interrupt`)) }, "Cancel") : null,
      !running ? h("button", { class: "small", type: "button", onclick: () => { S.live = null; updateLive(); } }, "Hide") : null),
    h("ol", { class: "log", id: "live-log" }, L.log.slice(-200).map(e => h("li", { class: "ev-" + e.kind }, e.text))));
}

// ---------- thread view ----------

function threadGraph() {
  const gid = S.thread && S.thread.metadata && S.thread.metadata.graph_id;
  const a = gid && assistantFor(gid);
  if (!a || !S.graphs[a.assistant_id]) return h("p", { class: "muted" }, "graph " + (gid || "unknown") + " is not served");
  const L = S.live && S.live.tid === S.thread.thread_id && S.live.status === "running" ? S.live : null;
  const cp = selectedCheckpoint();
  const marks = L ? { active: L.active, done: L.done } : { next: cp ? cp.next : [], done: new Set(cp ? Object.keys(cp.metadata.writes || {}) : []) };
  return drawGraph(S.graphs[a.assistant_id].graph, marks);
}

function selectedCheckpoint() {
  return S.history.find(c => c.checkpoint.checkpoint_id === S.selected) || S.history[0] || null;
}

function renderThread() {
  const t = S.thread;
  if (!t) return;
  const gid = (t.metadata && t.metadata.graph_id) || "";
  const a = gid && assistantFor(gid);
  const tot = (S.head.metadata && S.head.metadata.totals) || {};
  const focusedCid = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.cid : null;
  const view = $("view");
  const liveNow = S.live && S.live.tid === t.thread_id && S.live.status === "running";
  const graphPanel = h("section", { class: "panel" }, h("h2", {}, "Graph"), h("div", { id: "thread-graph", class: "graph-box" }, threadGraph()), graphLegend());
  const runPanel = a ? h("section", { class: "panel" }, h("h2", {}, "New run on this thread"), runForm(a.assistant_id, t.thread_id)) : null;
  view.replaceChildren(...[
    h("div", { class: "thread-head" },
      h("h1", {}, "Thread ", h("code", { class: "tid", title: t.thread_id }, t.thread_id)),
      h("div", { class: "facts" },
        h("span", { id: "thread-status" }, statusPill(liveNow ? "busy" : t.status)),
        a ? h("a", { href: "#/graph/" + a.assistant_id }, gid) : h("span", {}, gid || "no graph"),
        h("span", { class: "muted" }, "updated " + ago(t.updated_at)),
        h("span", { title: "tokens in / out" }, (tot.in || 0) + " / " + (tot.out || 0) + " tokens"),
        h("span", { class: "cost", title: "cost of the thread so far" }, money(tot.cost)),
        h("button", { class: "small", type: "button", id: "reload-thread", onclick: guard(async () => { await refreshThread(t.thread_id); renderThread(); }) }, "Reload"))),
    // While a run is live, its log sits beside the graph it moves through.
    liveNow ? h("div", { class: "cols livecols" }, livePanel(), graphPanel) : livePanel(),
    problemPanel(),
    h("div", { class: "cols threadcols" },
      h("section", { class: "panel timeline-panel", id: "timeline-panel" }, timelinePanel()),
      h("section", { class: "panel detail", id: "detail" }, checkpointDetail())),
    h("div", { class: "cols graphcols" }, liveNow ? null : graphPanel, runPanel),
    runsPanel()].filter(Boolean));
  if (focusedCid) {
    const el = document.querySelector(`[data-cid="${focusedCid}"]`);
    if (el) el.focus();
  }
}

function timelinePanel() {
  return [h("h2", {}, "Checkpoints ", h("span", { class: "muted small-text" }, S.history.length + " · newest first")), timeline()];
}

// liveRefresh reloads the thread's checkpoints while a run writes them (at
// most every 300 ms) and redraws the timeline and the selected checkpoint.
let liveTimer = null;
function liveRefresh(tid) {
  if (liveTimer) return;
  liveTimer = setTimeout(async () => {
    liveTimer = null;
    if (!S.thread || S.thread.thread_id !== tid || !S.live || S.live.status !== "running") return;
    try {
      const follow = !S.selected || (S.head.checkpoint && S.selected === S.head.checkpoint.checkpoint_id);
      const [head, history] = await Promise.all([
        api("GET", "/threads/" + tid + "/state"),
        api("POST", "/threads/" + tid + "/history", { limit: 1000 }),
      ]);
      if (!S.live || S.live.status !== "running" || S.thread.thread_id !== tid) return;
      S.head = head; S.history = history;
      if (follow) S.selected = head.checkpoint && head.checkpoint.checkpoint_id;
      const tp = $("timeline-panel"), d = $("detail");
      if (tp) tp.replaceChildren(...timelinePanel());
      if (d && follow) d.replaceChildren(checkpointDetail());
    } catch (e) { /* the final reload shows it */ }
  }, 300);
}

function runsPanel() {
  if (!S.runs.length) return null;
  return h("section", { class: "panel" }, h("h2", {}, "Runs"),
    h("table", { class: "tbl" }, h("thead", {}, h("tr", {}, h("th", {}, "run"), h("th", {}, "status"), h("th", {}, "created"), h("th", {}, "input"))),
      h("tbody", {}, S.runs.map(r => h("tr", {}, h("td", {}, h("code", {}, short(r.run_id))), h("td", {}, statusPill(r.status)),
        h("td", {}, ago(r.created_at)),
        h("td", { class: "mono trunc" }, r.kwargs && r.kwargs.command ? "command " + JSON.stringify(r.kwargs.command) : JSON.stringify(r.kwargs ? r.kwargs.input : null)))))));
}

// problemPanel shows the pending interrupt or the error of the head.
function problemPanel() {
  const t = S.thread;
  const a = assistantFor(t.metadata && t.metadata.graph_id);
  const aid = a && a.assistant_id;
  if (S.live && S.live.tid === t.thread_id && S.live.status === "running") return null;
  if (t.status === "interrupted" && S.head.interrupts && S.head.interrupts.length) {
    return h("section", { class: "panel interrupt", id: "interrupt" }, S.head.interrupts.map(i => interruptBox(i, aid)));
  }
  if (t.status === "interrupted") {
    // Interrupted with nothing pending: a run was cancelled.
    const r = S.runs[0];
    return h("section", { class: "panel stopbox", id: "stopped", role: "status" },
      h("h2", {}, "The run was cancelled"),
      h("p", {}, r ? ["Run ", h("code", {}, short(r.run_id)), " was cancelled"] : "The last run was cancelled",
        " before it finished. The state is saved at the last checkpoint (step " + ((S.head.metadata && S.head.metadata.step) ?? "?") + ")."),
      h("p", {}, h("strong", {}, "What to do: "), advice("cancel")),
      aid ? continueForm(aid, "cancel") : null);
  }
  const liveErr = S.live && S.live.tid === t.thread_id && S.live.error;
  const err = t.error || (liveErr && liveErr.message);
  if (t.status === "error" || liveErr) {
    return h("section", { class: "panel errorbox", id: "error", role: "alert" },
      h("h2", {}, "The run stopped with an error"),
      h("p", { class: "errmsg" }, (liveErr && liveErr.error ? liveErr.error + ": " : "") + (err || "unknown error")),
      h("p", {}, h("strong", {}, "What to do: "), advice(err || "")),
      aid ? continueForm(aid, err || "") : null);
  }
  return null;
}

function advice(msg) {
  if (/step limit|recursion/i.test(msg)) return "the state is saved at the last checkpoint. Continue with a higher step limit below, or fix the loop's exit condition in the graph.";
  if (/cost|budget|max_cost|max_tokens|llm calls|max_llm/i.test(msg)) return "a budget stopped the run; the state is saved. Continue with a larger budget below (config.configurable), or edit the state and fork.";
  if (/timeout|deadline/i.test(msg)) return "the run took too long. Continue below with a longer timeout, or re-run from an earlier checkpoint.";
  if (/cancel/i.test(msg)) return "continue it from the last checkpoint below, or pick an earlier checkpoint and re-run from there.";
  return "read the message, fix the cause (the graph, its tools, the model's settings, or the state: edit a field and fork), then continue from the last checkpoint below.";
}

function continueForm(aid, msg) {
  const limit = h("input", { id: "cont-limit", type: "number", min: "1", placeholder: "graph default" });
  const cost = h("input", { id: "cont-cost", type: "number", min: "0", step: "any", placeholder: "none" });
  return h("form", { class: "inline-form", onsubmit: guard(async ev => {
    ev.preventDefault();
    const body = { assistant_id: aid, input: null };
    const cfg = {};
    if (limit.value) cfg.recursion_limit = Number(limit.value);
    if (cost.value) cfg.configurable = { max_cost_usd: Number(cost.value) };
    if (Object.keys(cfg).length) body.config = cfg;
    await startRun(S.thread.thread_id, aid, body);
  }) },
    h("label", { for: "cont-limit" }, "Step limit"), limit,
    h("label", { for: "cont-cost" }, "Budget USD"), cost,
    h("button", { type: "submit", class: "primary", id: "continue-run" }, "Continue from the last checkpoint"));
}

function pendingToolCalls() {
  const vals = S.head.values || {};
  for (const v of Object.values(vals)) {
    if (isMessages(v)) {
      const last = v[v.length - 1];
      if (last && last.tool_calls && last.tool_calls.length) return { calls: last.tool_calls, key: Object.keys(vals).find(k => vals[k] === v) };
    }
  }
  return null;
}

function interruptBox(intr, aid) {
  const tid = S.thread.thread_id;
  const node = (intr.ns && intr.ns[0] || "").split(":")[0];
  const resume = v => startRun(tid, aid, { assistant_id: aid, command: { resume: v } });
  const answer = h("textarea", { id: "answer-json", rows: 3, class: "mono", spellcheck: "false", "aria-label": "Answer as JSON" }, '{"approved": false, "feedback": ""}');
  const feedback = h("input", { id: "reject-feedback", type: "text", placeholder: "why (sent as feedback)" });
  if (intr.when === "before" || intr.value === null || intr.value === undefined) {
    const tc = pendingToolCalls();
    return h("div", { class: "ibox" },
      h("h2", {}, "Paused before ", h("code", {}, node), tc ? " — pending tool call" + (tc.calls.length > 1 ? "s" : "") : ""),
      tc ? h("ul", { class: "toolcalls" }, tc.calls.map(c => h("li", {}, h("code", {}, c.name), " ", h("pre", { class: "mono inline" }, json(c.args ?? c.arguments))))) : h("p", {}, "The run stopped at a breakpoint; nothing has run in ", h("code", {}, node), " yet."),
      h("div", { class: "actions" },
        h("button", { type: "button", class: "primary", id: "approve", onclick: guard(() => startRun(tid, aid, { assistant_id: aid, input: null })) }, tc ? "Approve and run the tool" : "Continue"),
        tc ? h("span", { class: "reject" }, h("label", { class: "sr", for: "reject-feedback" }, "Reason"), feedback,
          h("button", { type: "button", class: "danger", id: "reject", onclick: guard(async () => {
            const msgs = tc.calls.map(c => ({ role: "tool", tool_call_id: c.id, name: c.name, content: "denied by the operator" + (feedback.value ? ": " + feedback.value : "") }));
            await api("POST", `/threads/${tid}/state`, { values: { [tc.key]: msgs }, as_node: node });
            await startRun(tid, aid, { assistant_id: aid, input: null });
          }) }, "Reject")) : null));
  }
  return h("div", { class: "ibox" },
    h("h2", {}, "Waiting for you at ", h("code", {}, node)),
    payloadView(intr.value),
    h("div", { class: "actions" },
      h("button", { type: "button", class: "primary", id: "approve", onclick: guard(() => resume({ approved: true })) }, "Approve"),
      h("span", { class: "reject" }, h("label", { class: "sr", for: "reject-feedback" }, "Feedback"), feedback,
        h("button", { type: "button", class: "danger", id: "reject", onclick: guard(() => resume({ approved: false, feedback: feedback.value })) }, "Reject"))),
    h("details", { class: "answer" }, h("summary", {}, "Answer with any JSON value"),
      answer,
      h("button", { type: "button", id: "answer", onclick: guard(() => {
        let v;
        try { v = JSON.parse(answer.value); } catch (e) { throw new Error("answer: not valid JSON (" + e.message + ")"); }
        return resume(v);
      }) }, "Send answer")));
}

function payloadView(v) {
  if (v && typeof v === "object" && !Array.isArray(v)) {
    return h("dl", { class: "payload" }, Object.entries(v).map(([k, x]) => [h("dt", {}, k), h("dd", {}, valueView(x))]));
  }
  return valueView(v);
}

// timeline lists the checkpoints newest first; a fork (a checkpoint whose
// parent has more than one child) starts a branch, drawn indented.
function timeline() {
  const byId = {}, kids = {};
  S.history.forEach(c => { byId[c.checkpoint.checkpoint_id] = c; });
  S.history.forEach(c => {
    const p = c.parent_checkpoint && c.parent_checkpoint.checkpoint_id;
    if (p) (kids[p] = kids[p] || []).push(c.checkpoint.checkpoint_id);
  });
  // The head's ancestors are the main line (lane 0); other branches get lanes in order.
  const main = new Set();
  for (let c = S.head.checkpoint && byId[S.head.checkpoint.checkpoint_id]; c; c = c.parent_checkpoint && byId[c.parent_checkpoint.checkpoint_id]) main.add(c.checkpoint.checkpoint_id);
  const lane = {};
  let nextLane = 1;
  const chrono = [...S.history].reverse();
  chrono.forEach(c => {
    const id = c.checkpoint.checkpoint_id;
    const p = c.parent_checkpoint && c.parent_checkpoint.checkpoint_id;
    if (main.has(id)) lane[id] = 0;
    else if (p && lane[p] !== undefined && kids[p][0] === id && !main.has(p)) lane[id] = lane[p];
    else lane[id] = nextLane++;
  });
  const ol = h("ol", { class: "timeline", role: "listbox", "aria-label": "Checkpoints; use the arrow keys or j and k to move" });
  S.history.forEach(c => {
    const id = c.checkpoint.checkpoint_id;
    const p = c.parent_checkpoint && c.parent_checkpoint.checkpoint_id;
    const forkStart = p && kids[p] && kids[p].length > 1 && lane[id] !== lane[p];
    const writers = Object.keys(c.metadata.writes || {}).filter(n => n !== "__input__");
    const sel = id === (S.selected || (S.history[0] && S.history[0].checkpoint.checkpoint_id));
    const li = h("li", { role: "option", tabindex: sel ? "0" : "-1", "aria-selected": sel ? "true" : "false",
      class: "cp lane" + Math.min(lane[id], 4) + (sel ? " sel" : ""), "data-cid": id, style: null,
      onclick: () => selectCheckpoint(id, true) },
      h("span", { class: "dot", "aria-hidden": "true" }),
      h("span", { class: "cp-main" },
        h("span", { class: "step" }, "step " + c.metadata.step),
        h("span", { class: "src" }, writers.length ? writers.join(", ") : c.metadata.source),
        forkStart ? h("span", { class: "pill fork" }, "fork") : null,
        c.interrupts && c.interrupts.length ? h("span", { class: "pill st-interrupted" }, "interrupt") : null,
        S.head.checkpoint && id === S.head.checkpoint.checkpoint_id ? h("span", { class: "pill head" }, "head") : null),
      h("span", { class: "cp-sub muted", title: id }, id.slice(-8), c.next && c.next.length ? " → " + c.next.join(", ") : " · end"));
    li.style.marginLeft = Math.min(lane[id], 4) * 18 + "px";
    ol.append(li);
  });
  ol.addEventListener("keydown", ev => {
    const k = ev.key;
    if (k === "ArrowDown" || k === "ArrowUp" || k === "Home" || k === "End") {
      ev.preventDefault();
      moveSelection(k === "ArrowDown" ? 1 : k === "ArrowUp" ? -1 : k === "Home" ? -1e9 : 1e9);
    }
  });
  return ol;
}

function moveSelection(delta) {
  if (!S.history.length) return;
  let i = S.history.findIndex(c => c.checkpoint.checkpoint_id === S.selected);
  if (i < 0) i = 0;
  i = Math.max(0, Math.min(S.history.length - 1, i + delta));
  selectCheckpoint(S.history[i].checkpoint.checkpoint_id, true);
}

function selectCheckpoint(id, focus) {
  S.selected = id;
  history.replaceState(null, "", "#/thread/" + S.thread.thread_id + "/" + id);
  document.querySelectorAll(".timeline .cp").forEach(li => {
    const on = li.dataset.cid === id;
    li.classList.toggle("sel", on);
    li.setAttribute("aria-selected", on ? "true" : "false");
    li.tabIndex = on ? 0 : -1;
    if (on && focus) { li.focus(); li.scrollIntoView({ block: "nearest" }); }
  });
  $("detail").replaceChildren(checkpointDetail());
  const gb = $("thread-graph");
  if (gb) gb.replaceChildren(threadGraph());
}

function checkpointDetail() {
  const c = selectedCheckpoint();
  if (!c) return h("p", { class: "muted" }, "This thread has no checkpoints yet. Start a run below.");
  const parent = c.parent_checkpoint && S.history.find(x => x.checkpoint.checkpoint_id === c.parent_checkpoint.checkpoint_id);
  const vals = c.values || {};
  const msgKey = Object.keys(vals).find(k => isMessages(vals[k]));
  const tabs = [["state", "State"], msgKey ? ["chat", "Chat"] : null, ["diff", "Diff"], ["json", "JSON"]].filter(Boolean);
  if (!tabs.some(t => t[0] === S.tab)) S.tab = "state";
  const body = h("div", { class: "tabbody", role: "tabpanel", id: "tab-body", "aria-labelledby": "tab-" + S.tab });
  const fill = () => {
    if (S.tab === "state") body.replaceChildren(stateView(vals));
    else if (S.tab === "chat") body.replaceChildren(chatView(vals[msgKey]));
    else if (S.tab === "diff") body.replaceChildren(diffView(parent ? parent.values : {}, vals, !parent));
    else body.replaceChildren(h("pre", { class: "mono json", tabindex: "0", "aria-label": "raw JSON of the state" }, json(vals)));
  };
  fill();
  const tablist = h("div", { class: "tabs", role: "tablist" }, tabs.map(([k, label]) => h("button", {
    type: "button", role: "tab", id: "tab-" + k, "aria-selected": S.tab === k ? "true" : "false", tabindex: S.tab === k ? "0" : "-1",
    class: S.tab === k ? "on" : null, "aria-controls": "tab-body",
    onclick: ev => { S.tab = k; tablist.querySelectorAll("button").forEach(b => { const on = b.id === "tab-" + k; b.classList.toggle("on", on); b.setAttribute("aria-selected", on); b.tabIndex = on ? 0 : -1; }); fill(); ev.currentTarget.focus(); },
    onkeydown: ev => {
      if (ev.key !== "ArrowRight" && ev.key !== "ArrowLeft") return;
      const bs = [...tablist.querySelectorAll("button")];
      const i = bs.indexOf(ev.currentTarget);
      bs[(i + (ev.key === "ArrowRight" ? 1 : bs.length - 1)) % bs.length].click();
    } }, label)));
  const writes = Object.entries(c.metadata.writes || {});
  const usage = c.metadata.usage || [];
  const tot = c.metadata.totals || {};
  return h("div", {},
    h("h2", {}, "Step " + c.metadata.step, h("span", { class: "muted small-text" }, " · " + (SOURCES[c.metadata.source] || c.metadata.source) + " · ", h("code", {}, c.checkpoint.checkpoint_id), " · ", h("span", { class: "ago" }, ago(c.created_at)))),
    h("div", { class: "meta-grid" },
      h("div", {}, h("h3", {}, "Written by"), writes.length ? h("ul", { class: "writes" }, writes.map(([n, f]) => h("li", {}, h("code", {}, n === "__input__" ? "input" : n), " → ", f.join(", ")))) : h("p", { class: "muted" }, "nothing (the start of the thread)")),
      h("div", {}, h("h3", {}, "Next"), h("p", {}, c.next && c.next.length ? c.next.map(n => h("code", { class: "nx" }, n)) : h("span", { class: "muted" }, "nothing: the run ended here"))),
      h("div", {}, h("h3", {}, "Usage"), usage.length ? h("ul", { class: "usage" }, usage.map(u => h("li", {}, h("code", {}, u.node), ` ${u.model}: ${u.in} in / ${u.out} out`, u.estimated ? " (estimated)" : "", " · " + money(u.cost)))) : h("p", { class: "muted" }, "no model calls in this step"),
        h("p", { class: "muted" }, "thread so far: " + (tot.llm_calls || 0) + (tot.llm_calls === 1 ? " call · " : " calls · ") + (tot.in || 0) + " / " + (tot.out || 0) + " tokens · " + money(tot.cost)))),
    tablist, body,
    timeTravel(c));
}

// SOURCES names what wrote a checkpoint (its metadata.source).
const SOURCES = { input: "the run's input", loop: "a step of the run", update: "an edit of the state", fork: "a fork" };

function valueView(v) {
  if (v === null || v === undefined) return h("span", { class: "muted" }, "null");
  if (typeof v === "string") return v === "" ? h("span", { class: "muted" }, "(empty)") : h("span", { class: "str" }, v);
  if (typeof v === "number" || typeof v === "boolean") return h("span", { class: "lit" }, String(v));
  if (Array.isArray(v) && v.length === 0) return h("span", { class: "muted" }, "[ ]");
  if (Array.isArray(v) && v.every(x => typeof x !== "object" || x === null)) return h("ol", { class: "arr" }, v.map(x => h("li", {}, valueView(x))));
  if (typeof v === "object" && !Array.isArray(v) && Object.keys(v).length === 0) return h("span", { class: "muted" }, "{ }");
  return h("pre", { class: "mono inline" }, json(v));
}

function stateView(vals) {
  const keys = Object.keys(vals);
  if (!keys.length) return h("p", { class: "muted" }, "empty state");
  return h("dl", { class: "state" }, keys.map(k => [h("dt", {}, k), h("dd", {}, isMessages(vals[k]) ? chatView(vals[k]) : valueView(vals[k]))]));
}

function chatView(msgs) {
  return h("ol", { class: "chat" }, (msgs || []).map(m => {
    const role = m.role || ({ human: "user", ai: "assistant" }[m.type]) || m.type;
    return h("li", { class: "msg " + role },
      h("span", { class: "who" }, role + (m.name && role !== "assistant" ? " · " + m.name : "") + (m.tool_call_id ? " · " + m.tool_call_id : "")),
      m.content ? h("div", { class: "content" }, typeof m.content === "string" ? m.content : json(m.content)) : null,
      (m.tool_calls || []).map(c => h("div", { class: "tc" }, "calls ", h("code", {}, c.name), " ", h("code", { class: "args" }, JSON.stringify(c.args ?? c.arguments)))));
  }));
}

function diffView(a, b, first) {
  a = a || {}; b = b || {};
  const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
  const rows = [];
  for (const k of keys) {
    const x = JSON.stringify(a[k]), y = JSON.stringify(b[k]);
    if (x === y) continue;
    let kind = !(k in a) ? "added" : !(k in b) ? "removed" : "changed";
    let before = a[k], after = b[k];
    if (Array.isArray(before) && Array.isArray(after) && after.length > before.length && JSON.stringify(after.slice(0, before.length)) === x) {
      kind = "appended"; after = after.slice(before.length); before = null;
    }
    rows.push(h("tr", { class: "d-" + kind }, h("th", { scope: "row" }, k), h("td", {}, kind),
      h("td", {}, kind === "added" || kind === "appended" ? "" : valueOrChat(before)), h("td", {}, kind === "removed" ? "" : valueOrChat(after))));
  }
  if (!rows.length) return h("p", { class: "muted" }, first ? "The first checkpoint: nothing to compare with." : "No change against the parent checkpoint.");
  return h("table", { class: "tbl diff" }, h("thead", {}, h("tr", {}, h("th", {}, "field"), h("th", {}, "change"), h("th", {}, "before (parent)"), h("th", {}, "after"))), h("tbody", {}, rows));
}

function valueOrChat(v) { return isMessages(v) ? chatView(v) : valueView(v); }

// timeTravel: edit a field at this checkpoint and fork, or re-run from it.
function timeTravel(c) {
  const t = S.thread;
  const a = assistantFor(t.metadata && t.metadata.graph_id);
  if (!a) return null;
  const aid = a.assistant_id;
  const vals = c.values || {};
  const fieldSel = h("select", { id: "fork-field" }, Object.keys(vals).map(k => h("option", { value: k }, k)));
  const val = h("textarea", { id: "fork-value", rows: 4, class: "mono", spellcheck: "false" });
  const sync = () => { val.value = json(vals[fieldSel.value] ?? null); };
  fieldSel.addEventListener("change", sync);
  sync();
  const writers = Object.keys(c.metadata.writes || {}).filter(n => n !== "__input__");
  const fork = async run => {
    let v;
    try { v = JSON.parse(val.value); } catch (e) { throw new Error(`value of ${fieldSel.value}: not valid JSON (${e.message})`); }
    const body = { values: { [fieldSel.value]: v }, checkpoint_id: c.checkpoint.checkpoint_id };
    if (writers.length === 1) body.as_node = writers[0];
    const res = await api("POST", `/threads/${t.thread_id}/state`, body);
    const nid = res.checkpoint.checkpoint_id;
    if (run) await startRun(t.thread_id, aid, { assistant_id: aid, input: null, checkpoint_id: nid });
    else { await refreshThread(t.thread_id); S.selected = nid; renderThread(); await loadThreads(); }
    banner("Forked: new checkpoint " + nid + (run ? " (and ran from it)" : ""), "ok");
  };
  return h("section", { class: "travel" },
    h("h3", {}, "Time travel from this checkpoint"),
    h("div", { class: "fork-row" },
      h("div", { class: "field" }, h("label", { for: "fork-field" }, "Field"), fieldSel),
      h("div", { class: "field grow" }, h("label", { for: "fork-value" }, "New value (JSON)"), val)),
    h("div", { class: "actions" },
      h("button", { type: "button", id: "fork", onclick: guard(() => fork(false)) }, "Fork with this value"),
      h("button", { type: "button", id: "fork-run", class: "primary", onclick: guard(() => fork(true)) }, "Fork and run"),
      h("button", { type: "button", id: "rerun", onclick: guard(() => startRun(t.thread_id, aid, { assistant_id: aid, input: null, checkpoint_id: c.checkpoint.checkpoint_id })) }, "Re-run from here")),
    h("p", { class: "muted small-text" }, "A fork adds a checkpoint next to this one (", writers.length === 1 ? "as if " + writers[0] + " wrote it" : "as an update", "); the old history stays as it was."));
}

// ---------- start ----------

document.addEventListener("keydown", ev => {
  const tag = (ev.target.tagName || "").toLowerCase();
  if (tag === "input" || tag === "textarea" || tag === "select" || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (ev.key === "/") { ev.preventDefault(); $("thread-search").focus(); }
  else if (ev.key === "g") { location.hash = "#/"; }
  else if ((ev.key === "j" || ev.key === "k") && S.thread) { ev.preventDefault(); moveSelection(ev.key === "j" ? 1 : -1); }
});

window.addEventListener("hashchange", () => { banner(null); render(); });

$("thread-search").addEventListener("input", async () => {
  renderThreads();
  const q = $("thread-search").value.trim();
  if (/^[0-9a-f-]{36}$/i.test(q) && !S.threads.some(t => t.thread_id === q)) {
    try { const t = await api("GET", "/threads/" + q); S.threads.unshift(t); renderThreads(); } catch (e) { /* no such thread */ }
  }
});
$("thread-search").addEventListener("keydown", ev => {
  if (ev.key === "Enter") { const a = document.querySelector("#threads a"); if (a) { a.click(); a.focus(); } }
});
$("status-filter").addEventListener("change", guard(loadThreads));
$("refresh").addEventListener("click", guard(loadThreads));
$("key-form").addEventListener("submit", guard(async ev => {
  ev.preventDefault();
  S.apiKey = $("api-key").value;
  localStorage.setItem("lgrun-api-key", S.apiKey);
  $("key-form").hidden = true;
  banner(null);
  await start();
}));

const start = guard(async function start() {
  try {
    const info = await api("GET", "/info");
    $("server-info").textContent = "lgrun serve " + (info.version || "");
  } catch (e) {
    if (e.status === 401) {
      banner(S.apiKey ? "The server refused the API key (" + e.message + "): enter the right one at the top right."
        : "This server needs an API key: enter it at the top right.");
      $("api-key").focus();
      return;
    }
    throw e;
  }
  await loadAssistants();
  await render();
  await loadThreads();
});
start();
