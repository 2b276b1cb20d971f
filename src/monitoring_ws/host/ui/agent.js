// One agent: its state, live charts (backfilled from the telemetry spool), the log tail,
// its sessions, its commands and the command console. One event stream, for this agent.

import { api, EventStream, query } from "./api.js";
import { Chart } from "./chart.js";
import { ago, clear, el, summarize, time } from "./util.js";
import { commandRow, commandTable, Console } from "./console.js";
import { ShellPanel } from "./terminal.js";

const WINDOW_MS = 10 * 60 * 1000;
const LOG_LINES = 200;
const BACKFILL_PAGES = 10;

export function agentView(root, agentId, streamState) {
  let stopped = false;
  const charts = {
    cpu: new Chart("cpu", "CPU", { max: 100, windowMs: WINDOW_MS }),
    memory: new Chart("memory", "Memory", { max: 100, windowMs: WINDOW_MS }),
    disk: new Chart("disk", "Disk (fullest)", { max: 100, windowMs: WINDOW_MS }),
    load: new Chart("load", "Load (1 min)", { unit: "", windowMs: WINDOW_MS }),
  };
  const span = el("select", { id: "chart-window", "aria-label": "chart window",
    onchange: () => {
      for (const chart of Object.values(charts)) chart.windowMs = Number(span.value);
      drawCharts();
    } },
  [[60000, "minute"], [300000, "5 minutes"], [WINDOW_MS, "10 minutes"]].map(([ms, text]) => el("option", { value: ms, text })));
  span.value = String(WINDOW_MS);
  const summary = el("dl", { class: "meta" });
  const badge = el("span", { class: "state offline", id: "agent-state", text: "…" });
  const problem = el("div");
  const logs = el("div", { class: "logs", id: "logs" });
  const sessions = el("tbody");
  const commands = el("tbody");
  let entry = null;
  let stale = false;
  const commandConsole = new Console(agentId);
  const shell = new ShellPanel(agentId);

  clear(root,
    el("h1", {}, `Agent ${agentId} `, badge),
    problem,
    el("div", { class: "panel" }, summary),
    el("div", { class: "toolbar" }, el("span", { class: "grow" }),
      el("label", {}, "charts show the last ", span)),
    el("div", { class: "charts" }, Object.values(charts).map((c) => c.node)),
    el("div", { class: "two" },
      commandConsole.node,
      el("div", { class: "panel" }, el("h2", { text: "Log tail" }), logs)),
    shell.node,
    el("div", { class: "two" },
      el("div", { class: "panel" }, el("h2", { text: "Commands" }),
        commandTable(commands, { agent: false }),
        el("a", { href: `#/commands?agentId=${encodeURIComponent(agentId)}`, text: "all of its commands" })),
      el("div", { class: "panel" }, el("h2", { text: "Connections (this node)" }),
        el("table", { class: "list" },
          el("thead", {}, el("tr", {}, ["connected", "ended", "close code", "address", "node"].map((h) => el("th", { text: h })))),
          sessions))));

  function showError(failure) {
    if (failure.status !== 401) problem.append(el("div", { class: "error", text: String(failure) }));
  }

  function labelText(labels) {
    return Object.entries(labels || {}).map(([k, v]) => `${k}=${v}`).join(", ") || "none";
  }

  function describe() {
    if (!entry) return;
    const details = entry.details || {};
    const ws = details.websocket || {};
    const ssm = details.ssm || {};
    const state = !entry.connected ? "offline" : stale ? "stale" : "connected";
    badge.className = `state ${state}`;
    badge.textContent = state;
    const rows = [
      ["transports", Object.entries(entry.transports || {}).map(([n, on]) => `${n}${on ? "" : " (not now)"}`).join(", ") || "none"],
      ["host", ws.hostname || ssm.computerName || ""],
      ["version", ws.agentVersion || (ssm.ssmAgentVersion ? `SSM agent ${ssm.ssmAgentVersion}` : "")],
      ["address", ws.remoteAddress || ""],
      ["node", ws.node || ""],
      ["last seen", entry.connected && !stale ? "now" : `${ago(entry.lastSeen)} (${time(entry.lastSeen)})`],
      ["commands", (ws.capabilities?.commands || []).join(", ")],
      ["labels", labelText(entry.agentLabels)],
      ["operator labels", labelText(entry.operatorLabels)],
    ];
    clear(summary, rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  }

  function point(ts, values) {
    const m = summarize(ts, values);
    for (const key of Object.keys(charts)) charts[key].add(ts, m[key]);
  }

  function drawCharts() {
    for (const chart of Object.values(charts)) chart.draw();
  }

  function addLogs(entries) {
    for (const line of entries) {
      logs.append(el("div", { class: `level-${String(line.level).toLowerCase()}` },
        `${new Date(line.ts).toLocaleTimeString()} ${line.level} ${line.source ? `[${line.source}] ` : ""}${line.message}`));
    }
    while (logs.childElementCount > LOG_LINES) logs.firstElementChild.remove();
    logs.scrollTop = logs.scrollHeight;
  }

  function addSession(span) {
    sessions.prepend(el("tr", { "data-session": span.sessionId },
      el("td", { text: time(span.connectedAt) }),
      el("td", { text: span.disconnectedAt ? time(span.disconnectedAt) : "open" }),
      el("td", { text: span.closeCode ?? "" }),
      el("td", { text: span.address }),
      el("td", { text: span.node })));
  }

  async function loadSessions() {
    try {
      const { data } = await api(`/api/agents/${encodeURIComponent(agentId)}/sessions`);
      clear(sessions);
      for (const span of [...data.sessions].reverse()) addSession(span);
    } catch (failure) {
      if (failure.status !== 404) showError(failure); // 404: no websocket transport here
    }
  }

  function showCommand(record) {
    const existing = commands.querySelector(`[data-command="${CSS.escape(record.commandId)}"]`);
    const row = commandRow(record, { agent: false });
    if (existing) existing.replaceWith(row);
    else commands.prepend(row);
    while (commands.childElementCount > 20) commands.lastElementChild.remove();
  }

  function onEvent(type, event) {
    if (event.agentId !== agentId) return;
    if (type === "metrics") {
      point(event.sampleTs, event.values);
      drawCharts();
    } else if (type === "log") {
      addLogs(event.entries);
    } else if (type === "command") {
      showCommand(event);
      commandConsole.update(event);
    } else if (type === "agent_stale" || type === "agent_active") {
      stale = type === "agent_stale";
      if (entry) entry.lastSeen = event.lastSeen;
      describe();
    } else if (type === "agent_connected" || type === "agent_disconnected") {
      stale = false;
      refresh();
      loadSessions();
    }
  }

  async function refresh() {
    try {
      const { data } = await api(`/api/agents/${encodeURIComponent(agentId)}`);
      entry = data;
      stale = Boolean(data.details?.websocket?.stale);
      describe();
      commandConsole.offer(data);
    } catch (failure) {
      showError(failure);
    }
  }

  async function backfill() {
    const since = Date.now() - WINDOW_MS;
    let after = 0;
    for (let page = 0; page < BACKFILL_PAGES && !stopped; page++) {
      const { data } = await api(`/api/telemetry${query({ agentId, type: "metrics", since, after, limit: 1000 })}`);
      for (const item of data.items) point(item.envelope.ts, item.envelope.payload);
      if (data.items.length < 1000) break;
      after = data.next;
    }
    drawCharts();
  }

  const stream = new EventStream({ agentId }, onEvent, streamState).start();
  refresh();
  loadSessions();
  api(`/api/agents/${encodeURIComponent(agentId)}/logs?limit=${LOG_LINES}`)
    .then(({ data }) => addLogs(data.entries))
    .catch((failure) => { if (failure.status !== 404) showError(failure); });
  api(`/api/commands${query({ agentId, limit: 20 })}`)
    .then(({ data }) => { for (const record of [...data.commands].reverse()) showCommand(record); })
    .catch(showError);
  backfill().catch((failure) => { if (failure.status !== 404) showError(failure); });
  shell.loadRecordings();
  const ticker = setInterval(() => { drawCharts(); describe(); }, 5000);

  return {
    stop() {
      stopped = true;
      shell.close();
      clearInterval(ticker);
      stream.stop();
    },
  };
}
