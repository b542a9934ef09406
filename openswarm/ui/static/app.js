// openswarm dashboard: each page subscribes to /events and redraws its data regions when the
// server pushes fresh JSON. No framework, no CDN; everything a peer named is put in the page
// as text (never as HTML).
"use strict";

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
  "#17becf", "#bcbd22", "#7f7f7f"];
const SVG_NS = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "onclick" || key === "onchange" || key === "onsubmit") node[key] = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  return node;
}

function fmt(value, digits = 3) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(digits);
  return String(value);
}

function pct(value) {
  return value === null || value === undefined ? "–" : (100 * value).toFixed(1) + " %";
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "?";
  const s = Math.round(seconds);
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s` : `${s}s`;
}

function when(stamp) {
  return stamp ? new Date(stamp * 1000).toISOString().replace("T", " ").slice(0, 19) : "–";
}

function short(hash) {
  return hash ? hash.slice(0, 12) + "…" : "–";
}

function table(id, headers, rows) {
  return el("table", { id },
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows));
}

function region(id) {
  let node = document.getElementById(id);
  if (!node) {
    node = el("section", { id });
    document.getElementById("main").append(node);
  }
  return node;
}

function fill(id, ...children) {
  region(id).replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== ""));
}

function errorLine(data) {
  return data.error ? el("p", { class: "error", id: "ledger-error" }, "ledger unreachable: " + data.error) : null;
}

// --- live updates ---

function subscribe(page, params, render) {
  const live = document.getElementById("live");
  const query = new URLSearchParams({ page, ...params });
  const source = new EventSource("/events?" + query.toString());
  let last = null;
  source.addEventListener("update", (event) => {
    live.textContent = "live · update " + event.lastEventId;
    live.className = "live on";
    if (event.data === last) return; // the ledger moved, this page's data did not
    last = event.data;
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
    render(JSON.parse(event.data));
  });
  source.onerror = () => {
    live.textContent = "reconnecting…";
    live.className = "live off";
    if (source.readyState !== EventSource.CLOSED) return; // the browser tries again itself
    // refused (a bad filter, too many pages, a new login needed…): say why, try again later
    fetch("/api/" + (page === "contract" ? "contract/" + encodeURIComponent(params.name) : page) + "?" + query.toString())
      .then((answer) => answer.json())
      .then((data) => { live.textContent = data.error ? "not live: " + data.error : "reconnecting…"; })
      .catch(() => { live.textContent = "not live: the dashboard does not answer"; });
    setTimeout(() => { if (!source.replaced) Object.assign(source, { replaced: subscribe(page, params, render) }); }, 5000);
  };
  return source;
}

async function post(path, body) {
  const answer = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-OpenSwarm-UI": "1" },
    body: JSON.stringify(body),
  });
  const data = await answer.json();
  if (!answer.ok) throw new Error(data.error || answer.statusText);
  return data;
}

// --- charts ---

function lineChart(id, title, lines, { yFormat = (v) => fmt(v, 3), xLabel = "round" } = {}) {
  const width = 520, height = 240, left = 56, right = 12, top = 26, bottom = 34;
  const points = lines.flatMap((l) => l.xs.map((x, i) => [x, l.ys[i]]).filter((p) => p[1] !== null && p[1] !== undefined));
  const box = svg("svg", { id, class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title });
  const heading = svg("text", { x: left, y: 16, class: "chart-title" });
  heading.textContent = title;
  box.append(heading);
  if (!points.length) {
    const none = svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "muted" });
    none.textContent = "no reports yet";
    box.append(none);
    return box;
  }
  let [x0, x1] = [Math.min(...points.map((p) => p[0])), Math.max(...points.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...points.map((p) => p[1])), Math.max(...points.map((p) => p[1]))];
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  if (y0 === y1) { y0 -= 0.5; y1 += 0.5; }
  const sx = (x) => left + ((x - x0) / (x1 - x0)) * (width - left - right);
  const sy = (y) => top + (1 - (y - y0) / (y1 - y0)) * (height - top - bottom);
  box.append(svg("line", { x1: left, y1: height - bottom, x2: width - right, y2: height - bottom, class: "axis" }));
  box.append(svg("line", { x1: left, y1: top, x2: left, y2: height - bottom, class: "axis" }));
  for (const [value, y] of [[y1, sy(y1)], [(y0 + y1) / 2, sy((y0 + y1) / 2)], [y0, sy(y0)]]) {
    const label = svg("text", { x: left - 6, y: y + 4, "text-anchor": "end", class: "tick" });
    label.textContent = yFormat(value);
    box.append(label, svg("line", { x1: left, y1: y, x2: width - right, y2: y, class: "grid" }));
  }
  for (const value of [x0, x1]) {
    const label = svg("text", { x: sx(value), y: height - bottom + 14, "text-anchor": "middle", class: "tick" });
    label.textContent = fmt(value, 0);
    box.append(label);
  }
  const axisName = svg("text", { x: (width + left) / 2, y: height - 4, "text-anchor": "middle", class: "tick" });
  axisName.textContent = xLabel;
  box.append(axisName);
  lines.forEach((line, i) => {
    const color = PALETTE[i % PALETTE.length];
    const coords = line.xs.map((x, j) => [x, line.ys[j]]).filter((p) => p[1] !== null && p[1] !== undefined);
    box.append(svg("polyline", {
      points: coords.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" "),
      fill: "none", stroke: color, "stroke-width": 2, "data-series": line.label,
    }));
    const key = svg("text", { x: width - right - 4, y: top + 14 * i + 4, "text-anchor": "end", fill: color, class: "legend" });
    key.textContent = line.label;
    box.append(key);
  });
  return box;
}

function siteLines(series, key) {
  return Object.entries(series).map(([site, s]) => ({ label: site, xs: s.round, ys: s[key] }));
}

// --- Swarm ---

function swarmPage() {
  document.getElementById("nav-swarm").classList.add("here");
  subscribe("swarm", {}, (data) => {
    fill("summary", el("h1", {}, "Swarm ", el("span", { id: "swarm-name" }, data.swarm || "?")),
      errorLine(data),
      el("p", {}, "ledger height ", el("b", { id: "height" }, fmt(data.height)), " · ledger time ", when(data.ledger_time)));
    fill("nodes-section", el("h2", {}, "Ledger nodes"), table("nodes", ["endpoint", "node", "health", "height", "quorum", "ordering"],
      data.nodes.map((n) => el("tr", { "data-endpoint": n.endpoint },
        el("td", {}, n.endpoint), el("td", {}, n.node || "–"),
        el("td", { class: n.healthy ? "ok" : "bad" }, n.healthy ? "healthy" : "down: " + n.error),
        el("td", {}, fmt(n.height)), el("td", {}, n.has_quorum ? "yes" : "no"), el("td", {}, n.ordering || "–")))));
    const operators = Object.entries(data.operators);
    fill("operators-section", el("h2", {}, "Operators"), operators.length
      ? table("operators", ["operator", "host", "peer", "liveness", "silent"],
        operators.map(([name, o]) => el("tr", { "data-operator": name }, el("td", {}, name), el("td", {}, o.host),
          el("td", {}, o.peer), el("td", { class: o.alive ? "ok" : "bad" }, o.alive ? "alive" : "silent"), el("td", {}, duration(o.silent_s)))))
      : el("p", { class: "muted" }, "no operator has announced itself"));
    fill("contracts-section", el("h2", {}, "Contracts"), data.contracts.length
      ? table("contracts", ["contract", "round", "merged", "members", "active", "finished", "merge", "topology", "min peers"],
        data.contracts.map((c) => el("tr", { "data-contract": c.contract },
          el("td", {}, el("a", { href: "/contract/" + encodeURIComponent(c.contract) }, c.contract)),
          el("td", {}, fmt(c.round)), el("td", {}, fmt(c.merged_rounds)), el("td", {}, fmt(c.members)),
          el("td", {}, fmt(c.active)), el("td", {}, c.all_finished ? "all" : fmt(c.finished)),
          el("td", {}, c.merge_method || "–"), el("td", {}, c.merge_topology), el("td", {}, fmt(c.min_peers)))))
      : el("p", { class: "muted" }, "no training contract yet"));
    fill("peers-section", el("h2", {}, "Peers"), Object.entries(data.peers).map(([contract, rows]) =>
      el("div", {}, el("h3", {}, contract), table(null, ["peer", "endpoint", "liveness", "silent", "finished", "leads"],
        rows.map((p) => el("tr", { class: "peer-row", "data-peer": p.name }, el("td", {}, p.name), el("td", {}, p.endpoint || "–"),
          el("td", { class: p.present ? "ok" : "bad" }, p.present ? "present" : p.active ? "silent" : "left"),
          el("td", {}, duration(p.silent_s)), el("td", {}, p.finished ? "yes" : "no"), el("td", {}, p.leads === false ? "no" : "yes")))))));
    fill("tasks-section", el("h2", {}, "Tasks"), data.tasks.length
      ? table("tasks", ["task", "author", "run", "state", "runs"],
        data.tasks.map((t) => el("tr", { "data-task": t.name }, el("td", {}, t.name), el("td", {}, t.author || "–"),
          el("td", {}, t.assigned ? fmt(t.run) : "–"),
          el("td", {}, !t.assigned ? "not assigned" : t.done ? (t.ok ? "completed" : "failed") : "running"),
          el("td", {}, Object.entries(t.runs).map(([op, s]) => `${op}: ${s}`).join(", ") || "–"))))
      : el("p", { class: "muted" }, "no task yet"));
  });
}

// --- Contract ---

const PHASES = ["encode", "transfer", "merge", "load", "ledger"];

function phaseLegend() {
  return el("p", { class: "legend-row" }, "time by phase, the sites' mean: ", PHASES.map((p, i) => {
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = PALETTE[i];
    return el("span", { class: "legend-item" }, swatch, p);
  }));
}

function phaseBar(phases) {
  const order = PHASES;
  const total = order.reduce((sum, p) => sum + (phases[p] || 0), 0);
  if (!total) return el("span", { class: "muted" }, "–");
  const bar = el("div", { class: "phases", title: order.filter((p) => phases[p]).map((p) => `${p} ${phases[p].toFixed(3)} s`).join(", ") });
  order.forEach((p, i) => {
    if (!phases[p]) return;
    const part = el("div", { class: "phase", "data-phase": p });
    part.style.width = (100 * phases[p] / total).toFixed(1) + "%";
    part.style.background = PALETTE[i];
    bar.append(part);
  });
  return el("div", {}, bar, el("small", {}, `${(phases.total || total).toFixed(3)} s`));
}

function contractPage(name) {
  subscribe("contract", { name }, (data) => {
    if (!data.exists) {
      fill("summary", el("h1", {}, "Contract ", name), errorLine(data), el("p", { class: "muted" }, "no such contract on this ledger (yet)"));
      return;
    }
    fill("summary", el("h1", {}, "Contract ", el("span", { id: "contract-name" }, name)), errorLine(data),
      el("p", { class: "headline" }, "round ", el("b", { id: "round" }, fmt(data.round)),
        " · leader ", el("b", { id: "leader" }, data.leader || (data.all_finished ? "–" : data.sealed ? "sharded" : "not sealed yet")),
        " · merged rounds ", el("b", { id: "merged-rounds" }, fmt(data.merged_rounds)),
        data.sync_interval ? ` · sync every ${data.sync_interval} batches` : "",
        data.all_finished ? el("span", { class: "ok", id: "all-finished" }, " · all sites finished") : ""),
      data.failed_leaders_now.length ? el("p", { class: "bad" }, "failed leaders this round: " + data.failed_leaders_now.join(", ")) : null,
      data.demoted.length ? el("p", { class: "bad" }, "demoted (may no longer lead): " + data.demoted.join(", ")) : null,
      data.bad_auditors.length ? el("p", { class: "bad" }, "auditors found lying: " + data.bad_auditors.join(", ")) : null);
    fill("sites-section", el("h2", {}, "Sites"), table("sites", ["site", "progress", "epoch", "loss", "metric", "ε (DP)", "ETA", "state"],
      data.sites.map((s) => {
        const bar = el("div", { class: "bar" }, el("div", { class: "fill" }));
        bar.firstChild.style.width = ((s.progress || 0) * 100).toFixed(1) + "%";
        return el("tr", { class: "site-row", "data-site": s.name },
          el("td", {}, s.name), el("td", {}, bar),
          el("td", { class: "epoch" }, s.total_epochs ? `${fmt(s.epoch)}/${s.total_epochs}` : fmt(s.epoch)),
          el("td", { class: "loss" }, fmt(s.loss, 4)), el("td", { class: "metric" }, fmt(s.metric, 4)),
          el("td", { class: "epsilon" + (s.privacy && s.privacy.spent ? " bad" : ""),
            title: s.privacy ? `δ ${s.privacy.delta}, per ${s.privacy.unit} (${s.privacy.mode === "sgd" ? "DP-SGD" : "site-level DP"})${s.privacy.spent ? ", budget spent" : ""}` : "no differential privacy" },
            s.privacy ? fmt(s.privacy.epsilon, 2) : "–"),
          el("td", { class: "eta" }, s.finished ? "done" : duration(s.eta_s)),
          el("td", { class: s.present ? "ok" : "bad" }, s.finished ? "finished" : s.present ? (s.ready ? "ready" : "training") : "silent"));
      })));
    fill("charts", el("h2", {}, "Over rounds"), el("div", { class: "charts" },
      lineChart("chart-loss", "loss per site", siteLines(data.series, "loss")),
      lineChart("chart-metric", "metric per site", siteLines(data.series, "metric"))));
    fill("rounds-section", el("h2", {}, "Recent rounds"), table("rounds",
      ["round", "status", "leader", "merged digest", "time by phase", "excluded", "failed leaders", "audit"],
      data.rounds.map((r) => el("tr", { class: "round-row", "data-round": r.round },
        el("td", {}, fmt(r.round)), el("td", { class: r.status === "merged" && !r.voided ? "ok" : "bad" }, r.voided ? "voided" : r.status),
        el("td", {}, r.leader || "–"),
        el("td", {}, !r.digest ? "–" : r.merged_height === null || r.merged_height === undefined
          ? el("span", { title: r.digest, class: "digest" }, short(r.digest))
          : el("a", { href: "/ledger?height=" + r.merged_height, title: r.digest, class: "digest" }, short(r.digest))),
        el("td", {}, phaseBar(r.phases)),
        el("td", {}, r.excluded.map((e) => `${e.name}: ${e.reason}`).join("; ") || "–"),
        el("td", {}, r.failed_leaders.join(", ") || "–"),
        el("td", { class: "audit" }, auditText(r))))), phaseLegend());
    fill("settings-section", el("h2", {}, "Settings"), el("pre", { id: "settings" }, JSON.stringify(data.settings, null, 1)));
  });
}

// a value a peer named, never one inherited by every object ("constructor", "toString"…)
function own(object, key) {
  return object && Object.hasOwn(object, key) ? object[key] : undefined;
}

function auditText(round) {
  const audit = round.audit;
  const parts = [];
  if (audit) {
    for (const who of audit.auditors || []) {
      const said = own(audit.attestations, who);
      if (typeof said === "string") {
        const agrees = round.digest && said.startsWith(round.digest + ":");
        parts.push(`${who} ${agrees ? "agreed" : "found " + short(said.split(":")[0])}`);
      } else if (own(audit.abstained, who) !== undefined) {
        parts.push(`${who} abstained: ${own(audit.abstained, who)}`);
      } else {
        parts.push(`${who} did not answer`);
      }
    }
    if ((audit.contradicted || []).length) parts.push("outvoted: " + audit.contradicted.join(", "));
  }
  for (const rejected of round.rejected_merges || []) {
    parts.push(`merge by ${rejected.leader} rejected (${short(rejected.digest)})`);
  }
  return parts.join("; ") || "–";
}

// --- Ledger explorer ---

const FILTERS = ["height", "type", "sender", "round", "contract"];

function ledgerPage() {
  document.getElementById("nav-ledger").classList.add("here");
  const initial = new URLSearchParams(location.search);
  const form = el("form", { id: "filters" },
    FILTERS.map((f) => el("label", {}, f, el("input", { id: "filter-" + f, name: f, value: initial.get(f) || "", size: f === "contract" || f === "sender" ? 18 : 8 }))),
    el("button", { type: "submit", id: "search" }, "search"),
    el("button", { type: "button", id: "clear" }, "clear"));
  let source = null;
  const detail = el("pre", { id: "block-detail", class: "muted" }, "pick a block to see it whole");
  const verifyResult = el("span", { id: "verify-result" });
  const start = () => {
    const params = {};
    for (const f of FILTERS) {
      const value = document.getElementById("filter-" + f).value.trim();
      if (value) params[f] = value;
    }
    history.replaceState(null, "", "/ledger" + (Object.keys(params).length ? "?" + new URLSearchParams(params) : ""));
    if (source) {
      source.replaced = true; // no retry of the old search
      source.close();
    }
    source = subscribe("ledger", params, renderBlocks);
  };
  form.onsubmit = (event) => { event.preventDefault(); start(); };
  form.querySelector("#clear").onclick = () => { FILTERS.forEach((f) => { document.getElementById("filter-" + f).value = ""; }); start(); };
  const verify = el("button", { id: "verify", type: "button" }, "verify the chain");
  verify.onclick = async () => {
    verifyResult.textContent = "verifying…";
    try {
      const answer = await fetch("/api/verify");
      const report = await answer.json();
      if (!answer.ok) throw new Error(report.error || answer.statusText);
      showVerify(verifyResult, report);
    } catch (error) {
      verifyResult.className = "bad";
      verifyResult.textContent = "could not verify: " + error.message;
    }
  };
  fill("explorer-head", el("h1", {}, "Ledger"), form, el("p", {}, verify, " ", verifyResult));
  region("blocks-section");
  fill("detail-section", el("h2", {}, "Block"), detail);
  const renderBlocks = (data) => {
    if (data.verified && !verifyResult.textContent) showVerify(verifyResult, data.verified);
    fill("blocks-section", errorLine(data), el("p", {}, "height ", el("b", { id: "height" }, fmt(data.height)),
      ` · ${data.blocks.length} blocks shown (newest first)`),
    table("blocks", ["height", "kind", "sender", "contract", "round", "outcome", "time", "hash"],
      data.blocks.map((b) => {
        const row = el("tr", { class: "block-row", "data-height": b.height, "data-kind": b.kind },
          el("td", {}, fmt(b.height)), el("td", { class: "kind" }, b.kind), el("td", {}, b.sender || "–"),
          el("td", {}, b.contract || "–"), el("td", { class: "round" }, fmt(b.round)),
          el("td", { class: b.status === "applied" ? "ok" : "bad", title: b.reason || "" }, b.status + (b.reason ? ": " + b.reason : "")),
          el("td", {}, when(b.time)), el("td", { class: "mono" }, short(b.hash)));
        row.onclick = async () => {
          const answer = await fetch("/api/block/" + b.height);
          detail.className = "";
          detail.textContent = JSON.stringify(await answer.json(), null, 1);
        };
        return row;
      })));
  };
  start();
}

function showVerify(node, report) {
  node.className = report.ok ? "ok" : "bad";
  node.textContent = report.ok
    ? `verified: ${report.blocks} blocks, hashes, links, signatures and outcomes replayed (head ${short(report.head_hash)})`
    : `NOT verified at height ${report.bad_height}: ${report.problem || report.error}`;
}

// --- Experiments ---

function experimentsPage() {
  document.getElementById("nav-experiments").classList.add("here");
  const chosen = new Set();
  let latest = null;
  const contractPick = el("select", { id: "save-contract" });
  const title = el("input", { id: "save-title", placeholder: "title", size: 30, maxlength: 200 });
  const note = el("textarea", { id: "save-note", placeholder: "what this run tried, what you saw", rows: 2, cols: 50 });
  const message = el("span", { id: "save-message" });
  const save = el("button", { id: "save", type: "submit" }, "save run");
  const form = el("form", { id: "save-form" }, el("label", {}, "run ", contractPick), title, note, save, message);
  form.onsubmit = async (event) => {
    event.preventDefault();
    try {
      const entry = await post("/api/experiments", { contract: contractPick.value, title: title.value, note: note.value });
      message.className = "ok";
      message.textContent = `saved as ${entry.id}`;
      title.value = "";
      note.value = "";
    } catch (error) {
      message.className = "bad";
      message.textContent = error.message;
    }
  };
  const compare = el("button", { id: "compare-btn", type: "button" }, "compare selected");
  compare.onclick = () => showComparison(latest, chosen);
  fill("experiments-head", el("h1", {}, "Experiments"), el("h2", {}, "Save a run"), form);
  region("runs-section");
  fill("compare-head", el("h2", {}, "Compare"), el("p", {}, compare, " ", el("span", { class: "muted" }, "tick two or more runs")));
  region("compare");
  const render = (data) => {
    latest = data;
    const editing = document.activeElement && document.activeElement.classList.contains("note-edit");
    if (editing) return; // redrawn when the note loses focus, not under the user's typing
    save.disabled = !data.can_write;
    if (!data.can_write) message.textContent = "read-only: the dashboard's identity is not an admin";
    const current = contractPick.value;
    contractPick.replaceChildren(...data.live.map((r) => el("option", { value: r.contract, selected: r.contract === current }, r.contract)));
    const pick = (id) => {
      const box = el("input", { type: "checkbox", class: "compare", "data-id": id, checked: chosen.has(id) });
      box.onchange = () => { if (box.checked) chosen.add(id); else chosen.delete(id); };
      return box;
    };
    fill("runs-section", errorLine(data), el("h2", {}, "Runs on this ledger"),
      table("live-runs", ["", "contract", "rounds", "duration", "mean final metric", "finished", "settings"],
        data.live.map((r) => el("tr", { class: "run-row", "data-contract": r.contract }, el("td", {}, pick("live:" + r.contract)),
          el("td", {}, el("a", { href: "/contract/" + encodeURIComponent(r.contract) }, r.contract)), el("td", {}, fmt(r.rounds)),
          el("td", {}, duration(r.duration_s)), el("td", {}, fmt(meanFinal(r, "metric"), 4)), el("td", {}, r.finished ? "yes" : "no"),
          el("td", { class: "small" }, settingsText(r.settings))))),
      el("h2", {}, "Saved"),
      data.saved.length ? table("saved", ["", "title", "note", "contract", "swarm", "rounds", "mean final metric", "saved", ""],
        data.saved.map((e) => savedRow(e, pick, () => render(latest)))) : el("p", { class: "muted", id: "saved-none" }, "nothing saved yet"));
  };
  subscribe("experiments", {}, render);
}

function savedRow(entry, pick, redraw) {
  const record = entry.record || {};
  const noteBox = el("textarea", { class: "note-edit", rows: 1, cols: 24 }, entry.note || "");
  noteBox.addEventListener("blur", () => setTimeout(redraw, 200));
  const keep = el("button", { type: "button", class: "annotate" }, "keep note");
  keep.onclick = async () => {
    try { await post("/api/experiments/" + entry.id, { note: noteBox.value }); } catch (error) { keep.title = error.message; }
  };
  return el("tr", { class: "saved-row", "data-id": entry.id }, el("td", {}, pick("saved:" + entry.id)),
    el("td", { class: "title" }, entry.title), el("td", {}, noteBox, keep), el("td", {}, record.contract || "–"),
    el("td", {}, entry.swarm || "–"), el("td", {}, fmt(record.rounds)), el("td", {}, fmt(meanFinal(record, "metric"), 4)),
    el("td", {}, when(entry.saved_at)));
}

function meanFinal(record, key) {
  const values = Object.values(record.final || {}).map((f) => f[key]).filter((v) => typeof v === "number");
  return values.length ? values.reduce((a, b) => a + b, 0) / values.length : null;
}

function settingsText(settings) {
  return Object.entries(settings || {}).filter(([, v]) => v !== null && !(typeof v === "object" && !Object.keys(v).length))
    .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ");
}

function meanSeries(record, key) {
  const byRound = new Map();
  for (const s of Object.values(record.series || {})) {
    s.round.forEach((r, i) => {
      if (typeof s[key][i] !== "number") return;
      const slot = byRound.get(r) || [];
      slot.push(s[key][i]);
      byRound.set(r, slot);
    });
  }
  const rounds = [...byRound.keys()].sort((a, b) => a - b);
  return { xs: rounds, ys: rounds.map((r) => byRound.get(r).reduce((a, b) => a + b, 0) / byRound.get(r).length) };
}

function showComparison(data, chosen) {
  if (!data) return;
  const runs = [];
  for (const id of chosen) {
    if (id.startsWith("live:")) {
      const record = data.live.find((r) => "live:" + r.contract === id);
      if (record) runs.push({ label: record.contract + " (live)", record });
    } else {
      const entry = data.saved.find((e) => "saved:" + e.id === id);
      if (entry && entry.record) runs.push({ label: entry.title, record: entry.record, note: entry.note });
    }
  }
  if (runs.length < 2) {
    fill("compare", el("p", { class: "bad", id: "compare-message" }, "tick at least two runs to compare"));
    return;
  }
  const keys = [...new Set(runs.flatMap((r) => Object.keys(r.record.settings || {})))].sort();
  const row = (label, cells, cls) => el("tr", { class: cls }, el("th", {}, label), cells.map((c) => el("td", {}, c)));
  fill("compare", table("compare-table", ["", ...runs.map((r) => r.label)], [
    row("rounds", runs.map((r) => fmt(r.record.rounds)), "cmp-rounds"),
    row("duration", runs.map((r) => duration(r.record.duration_s)), "cmp-duration"),
    row("mean final metric", runs.map((r) => fmt(meanFinal(r.record, "metric"), 4)), "cmp-metric"),
    row("mean final loss", runs.map((r) => fmt(meanFinal(r.record, "loss"), 4)), "cmp-loss"),
    row("sites", runs.map((r) => Object.keys(r.record.final || {}).join(", ")), "cmp-sites"),
    row("note", runs.map((r) => r.note || "–"), "cmp-note"),
    ...keys.map((k) => row(k, runs.map((r) => JSON.stringify((r.record.settings || {})[k] ?? null)), "cmp-setting")),
  ]), el("div", { class: "charts" },
    lineChart("compare-metric", "mean metric over sites", runs.map((r) => ({ label: r.label, ...meanSeries(r.record, "metric") }))),
    lineChart("compare-loss", "mean loss over sites", runs.map((r) => ({ label: r.label, ...meanSeries(r.record, "loss") })))));
}

// --- start ---

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  document.getElementById("main").replaceChildren();
  if (page === "swarm") swarmPage();
  else if (page === "contract") contractPage(decodeURIComponent(document.body.dataset.name));
  else if (page === "ledger") ledgerPage();
  else if (page === "experiments") experimentsPage();
});
