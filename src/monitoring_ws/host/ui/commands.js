// Command history: GET /api/commands with its filters, a page at a time (newest first),
// each row linked to its agent; records that change while shown are updated live.

import { api, EventStream, query } from "./api.js";
import { clear, el } from "./util.js";
import { commandRow, commandTable, resultView } from "./console.js";

const STATES = ["queued", "sent", "succeeded", "failed", "timed_out", "cancelled", "agent_disconnected"];
const SINCE = [["", "any time"], ["3600000", "last hour"], ["86400000", "last day"], ["604800000", "last week"]];

export function commandsView(root, streamState) {
  const initial = new URLSearchParams(location.hash.split("?")[1] || "");
  const agentId = el("input", { name: "agentId", placeholder: "agent", value: initial.get("agentId") || "" });
  const command = el("input", { name: "command", placeholder: "command", value: initial.get("command") || "" });
  const state = el("select", { name: "state" }, el("option", { value: "", text: "every state" }), STATES.map((s) => el("option", { value: s, text: s })));
  state.value = initial.get("state") || "";
  const requestedBy = el("input", { name: "requestedBy", placeholder: "requested by (label or token:NAME)" });
  const since = el("select", { name: "since" }, SINCE.map(([v, t]) => el("option", { value: v, text: t })));
  const tbody = el("tbody");
  const problem = el("div");
  const more = el("button", { type: "button", id: "more", text: "More", hidden: true });
  const detail = el("div");
  let cursor = null;

  const form = el("form", { class: "toolbar", id: "history-filters" }, agentId, command, state, requestedBy, since,
    el("button", { class: "primary", type: "submit", text: "Search" }));
  clear(root, el("h1", { text: "Commands" }), form, problem,
    el("div", { class: "panel" }, commandTable(tbody), more), detail);

  function filters() {
    return {
      agentId: agentId.value.trim(),
      command: command.value.trim(),
      state: state.value,
      requestedBy: requestedBy.value.trim(),
      since: since.value ? Date.now() - Number(since.value) : "",
    };
  }

  async function load(reset) {
    if (reset) {
      cursor = null;
      clear(tbody);
      clear(problem);
    }
    try {
      const { data } = await api(`/api/commands${query({ ...filters(), limit: 50, cursor })}`);
      for (const record of data.commands) tbody.append(commandRow(record));
      cursor = data.next;
      more.hidden = !cursor;
      if (!tbody.childElementCount) tbody.append(el("tr", {}, el("td", { colspan: 7, class: "muted", text: "no command matches" })));
    } catch (failure) {
      if (failure.status !== 401) clear(problem, el("div", { class: "error", text: String(failure) }));
    }
  }

  tbody.addEventListener("click", async (event) => {
    const row = event.target.closest("tr[data-command]");
    if (!row || event.target.closest("a")) return;
    try {
      const { data } = await api(`/api/commands/${encodeURIComponent(row.dataset.command)}`);
      clear(detail, el("div", { class: "panel" }, el("h2", { text: `${data.command} on ${data.agentId} · ${data.state}` }),
        resultView(data.result), el("details", {}, el("summary", { text: "the record" }), el("pre", { text: JSON.stringify(data, null, 2) }))));
    } catch (failure) {
      clear(detail, el("div", { class: "error", text: String(failure) }));
    }
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load(true);
  });
  more.addEventListener("click", () => load(false));

  function onEvent(type, record) {
    const shown = tbody.querySelector(`[data-command="${CSS.escape(record.commandId)}"]`);
    if (shown) shown.replaceWith(commandRow(record));
  }

  const stream = new EventStream({ type: "command" }, onEvent, streamState).start();
  load(true);
  return { stop: () => stream.stop() };
}
