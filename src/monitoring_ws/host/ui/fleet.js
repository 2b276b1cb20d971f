// The fleet: every agent of every transport in a virtualised table (only the rows in
// view exist in the page, so 10,000 agents cost what 40 do), live from one event stream.

import { api, EventStream } from "./api.js";
import { ago, agentLink, clear, el, pct, summarize } from "./util.js";

const ROW = 29; // px: .row height (28) plus its border
const OVERSCAN = 10;
const STATES = ["connected", "stale", "offline"];
const COLUMNS = [
  ["state", "State"],
  ["agentId", "Agent"],
  ["transport", "Transport"],
  ["version", "Version"],
  ["host", "Host"],
  ["cpu", "CPU"],
  ["memory", "Memory"],
  ["disk", "Disk"],
  ["lastSeen", "Last seen"],
];
const NUMERIC = new Set(["cpu", "memory", "disk", "lastSeen"]);

function fromListing(entry) {
  const details = entry.details || {};
  const ws = details.websocket || {};
  const first = Object.values(details).find((d) => d && (d.hostname || d.computerName)) || {};
  const row = {
    agentId: entry.agentId,
    connectedVia: new Set(Object.entries(entry.transports || {}).filter(([, on]) => on).map(([name]) => name)),
    known: Object.keys(details),
    stale: Boolean(ws.stale),
    lastSeen: entry.lastSeen,
    version: ws.agentVersion || first.agentVersion || first.ssmAgentVersion || "",
    host: ws.hostname || first.hostname || first.computerName || "",
    metrics: entry.metrics || null,
    labels: Object.entries(entry.labels || {}).map(([k, v]) => `${k}=${v}`).join(" "),
  };
  return row;
}

function stateOf(row) {
  if (!row.connectedVia.size) return "offline";
  return row.stale ? "stale" : "connected";
}

function transportOf(row) {
  const names = row.connectedVia.size ? [...row.connectedVia] : row.known;
  return names.join(", ");
}

function valueOf(row, key) {
  switch (key) {
    case "state":
      return STATES.indexOf(stateOf(row));
    case "transport":
      return transportOf(row);
    case "cpu":
    case "memory":
    case "disk":
      return row.metrics && typeof row.metrics[key] === "number" ? row.metrics[key] : -1;
    case "lastSeen":
      return row.lastSeen || 0;
    default:
      return row[key] || "";
  }
}

export function fleetView(root, streamState) {
  const agents = new Map();
  let shown = [];
  let sort = { key: "agentId", asc: true };
  let dirty = false;
  let stopped = false;

  const filter = el("input", { type: "search", placeholder: "filter: agent, host, version, label (env=prod)", "aria-label": "filter", class: "grow" });
  const stateFilter = el("select", { "aria-label": "state" },
    el("option", { value: "", text: "every state" }),
    STATES.map((s) => el("option", { value: s, text: s })));
  const counts = el("div", { class: "counts muted" });
  const head = el("div", { class: "head grid" });
  const spacer = el("div");
  const body = el("div");
  const rows = el("div", { class: "rows", role: "rowgroup" }, spacer, body);
  const problem = el("div");

  for (const [key, label] of COLUMNS) {
    head.append(el("div", { class: NUMERIC.has(key) && key !== "lastSeen" ? "num" : "" },
      el("button", { type: "button", "data-sort": key, text: label, onclick: () => {
        sort = sort.key === key ? { key, asc: !sort.asc } : { key, asc: !NUMERIC.has(key) };
        refilter();
      } })));
  }
  clear(root,
    el("h1", { text: "Fleet" }),
    problem,
    el("div", { class: "toolbar" }, filter, stateFilter, counts),
    el("div", { class: "table", id: "fleet" }, head, rows));

  function refilter() {
    const needle = filter.value.trim().toLowerCase();
    const wanted = stateFilter.value;
    shown = [...agents.values()].filter((row) => {
      if (wanted && stateOf(row) !== wanted) return false;
      if (!needle) return true;
      return `${row.agentId} ${row.host} ${row.version} ${transportOf(row)} ${row.labels}`.toLowerCase().includes(needle);
    });
    const { key, asc } = sort;
    shown.sort((a, b) => {
      const x = valueOf(a, key);
      const y = valueOf(b, key);
      const order = x < y ? -1 : x > y ? 1 : a.agentId < b.agentId ? -1 : 1;
      return asc ? order : -order;
    });
    for (const button of head.querySelectorAll("button")) {
      button.classList.toggle("sorted", button.dataset.sort === key);
      button.classList.toggle("asc", button.dataset.sort === key && asc);
    }
    const tally = { connected: 0, stale: 0, offline: 0 };
    for (const row of agents.values()) tally[stateOf(row)] += 1;
    clear(counts,
      el("span", { text: `${agents.size} agents` }),
      STATES.map((s) => el("span", { text: `${tally[s]} ${s}` })),
      shown.length !== agents.size ? el("span", { text: `${shown.length} shown` }) : null);
    draw();
  }

  function draw() {
    const first = Math.max(0, Math.floor(rows.scrollTop / ROW) - OVERSCAN);
    const last = Math.min(shown.length, Math.ceil((rows.scrollTop + rows.clientHeight) / ROW) + OVERSCAN);
    spacer.style.height = `${first * ROW}px`;
    body.style.paddingBottom = `${(shown.length - last) * ROW}px`;
    const now = Date.now();
    clear(body, shown.slice(first, last).map((row) => {
      const state = stateOf(row);
      const m = row.metrics || {};
      return el("div", { class: "row grid", role: "row", "data-agent": row.agentId, "data-state": state },
        el("div", {}, el("span", { class: `state ${state}`, text: state })),
        el("div", {}, agentLink(row.agentId)),
        el("div", { text: transportOf(row) }),
        el("div", { text: row.version }),
        el("div", { text: row.host }),
        el("div", { class: "num", text: pct(m.cpu) }),
        el("div", { class: "num", text: pct(m.memory) }),
        el("div", { class: "num", text: pct(m.disk) }),
        el("div", { text: state === "connected" ? "now" : ago(row.lastSeen, now), title: row.lastSeen ? new Date(row.lastSeen).toLocaleString() : "" }));
    }));
  }

  // Events change rows; the table is redrawn at most four times a second.
  function changed() {
    if (dirty) return;
    dirty = true;
    setTimeout(() => {
      dirty = false;
      if (!stopped) refilter();
    }, 250);
  }

  function row(agentId) {
    let found = agents.get(agentId);
    if (!found) {
      found = { agentId, connectedVia: new Set(), known: [], stale: false, lastSeen: null, version: "", host: "", metrics: null, labels: "" };
      agents.set(agentId, found);
    }
    return found;
  }

  function onEvent(type, event) {
    const target = row(event.agentId);
    if (type !== "metrics") target.moved = true;
    if (type === "agent_connected") {
      target.connectedVia.add("websocket");
      if (!target.known.includes("websocket")) target.known.push("websocket");
      target.stale = false;
      target.host = event.hostname || target.host;
      target.version = event.agentVersion || target.version;
      target.lastSeen = event.ts;
    } else if (type === "agent_disconnected") {
      target.connectedVia.delete(event.transport || "websocket");
      target.stale = false;
      target.lastSeen = event.ts;
    } else if (type === "agent_stale") {
      target.stale = true;
      target.lastSeen = event.lastSeen;
    } else if (type === "agent_active") {
      target.stale = false;
      target.lastSeen = event.lastSeen;
    } else if (type === "metrics") {
      target.metrics = event.summary || summarize(event.sampleTs, event.values);
      target.lastSeen = event.ts;
    }
    changed();
  }

  filter.addEventListener("input", refilter);
  stateFilter.addEventListener("change", refilter);
  rows.addEventListener("scroll", () => requestAnimationFrame(draw), { passive: true });
  const ticker = setInterval(draw, 10000); // "2m ago" stays true; draws only what is in view

  // The stream opens first, so nothing that happens while the listing loads is missed.
  const types = "agent_connected,agent_disconnected,agent_stale,agent_active,metrics";
  const stream = new EventStream({ type: types, metrics: "summary" }, onEvent, streamState).start();
  api("/api/agents?metrics=summary").then(({ data }) => {
    for (const entry of data.agents) {
      const fresh = fromListing(entry);
      const known = agents.get(entry.agentId);
      if (known) {
        // What events said while the listing was on its way is newer than the listing.
        if (known.metrics && (!fresh.metrics || known.metrics.ts >= fresh.metrics.ts)) fresh.metrics = known.metrics;
        if ((known.lastSeen || 0) > (fresh.lastSeen || 0)) fresh.lastSeen = known.lastSeen;
        if (known.moved) {
          fresh.connectedVia = known.connectedVia;
          fresh.stale = known.stale;
        }
      }
      agents.set(entry.agentId, fresh);
    }
    refilter();
  }).catch((failure) => {
    if (failure.status !== 401) clear(problem, el("div", { class: "error", text: String(failure) }));
  });

  return {
    stop() {
      stopped = true;
      clearInterval(ticker);
      stream.stop();
    },
  };
}
