// Fleet jobs: compose one (with a live "matches N agents" preview), list them, and follow
// one (#/jobs/ID): its progress from the event stream, its agents, cancel.

import { api, EventStream, query } from "./api.js";
import { operatorKey, signIntent } from "./operator.js";
import { agentLink, clear, el, time } from "./util.js";

const ENDED = new Set(["succeeded", "failed", "stopped", "cancelled"]);
const PAGE = 500;

// A label selector, or the object form as JSON ({"glob": "web-*"}).
function selectorOf(text) {
  const written = text.trim();
  return written.startsWith("{") ? JSON.parse(written) : written;
}

function amount(text) {
  const written = text.trim();
  return /^\d+$/.test(written) ? Number(written) : written;
}

export function jobsView(root, jobId, streamState) {
  return jobId ? jobView(root, jobId, streamState) : listView(root, streamState);
}

function listView(root, streamState) {
  const command = el("input", { id: "job-command", placeholder: "command (ping, run...)", required: true });
  const args = el("textarea", { id: "job-args", rows: 2, placeholder: '{"command": "uptime"}' });
  const selector = el("input", { id: "job-selector", class: "grow", placeholder: 'env=prod,role in (web,api)  or  {"glob": "web-*"}', required: true });
  const preview = el("span", { id: "job-preview", class: "muted", text: "" });
  const concurrency = el("input", { id: "job-concurrency", value: "50", size: 5, title: "maxConcurrency: a number or a percentage" });
  const errors = el("input", { id: "job-errors", value: "0", size: 5, title: "maxErrors: a number or a percentage" });
  const offline = el("select", { id: "job-offline" }, el("option", { value: "skip", text: "skip offline agents" }), el("option", { value: "wait", text: "wait for offline agents" }));
  const problem = el("div", { id: "job-error" });
  const tbody = el("tbody");
  const form = el("form", { class: "panel console", id: "job-form" },
    el("label", { text: "Agents (selector)" }), el("div", { class: "toolbar" }, selector, preview),
    el("label", { text: "Command" }), command,
    el("label", { text: "Arguments (JSON)" }), args,
    el("div", { class: "toolbar" },
      el("label", { text: "at once" }), concurrency, el("label", { text: "errors allowed" }), errors, offline,
      el("button", { class: "primary", type: "submit", id: "job-run", text: "Run job" })),
    problem);
  clear(root, el("h1", { text: "Jobs" }), form,
    el("div", { class: "panel" }, el("table", { class: "list jobs" },
      el("thead", {}, el("tr", {}, ["created", "job", "command", "selector", "state", "progress"].map((h) => el("th", { text: h })))),
      tbody)));

  let previewTimer = null;
  let asked = 0;
  selector.addEventListener("input", () => {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(async () => {
      const written = selector.value.trim();
      const mine = ++asked;
      if (!written) return void (preview.textContent = "");
      try {
        const { data } = await api(`/api/agents${query({ selector: written })}`);
        if (mine !== asked) return;
        const connected = data.agents.filter((a) => a.connected).length;
        preview.textContent = `matches ${data.count} agents (${connected} connected)`;
        preview.dataset.count = String(data.count);
      } catch (failure) {
        if (mine === asked) preview.textContent = String(failure);
      }
    }, 250);
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(problem);
    let body;
    try {
      body = {
        selector: selectorOf(selector.value),
        command: command.value.trim(),
        args: args.value.trim() ? JSON.parse(args.value) : {},
        maxConcurrency: amount(concurrency.value),
        maxErrors: amount(errors.value),
        offline: offline.value,
      };
    } catch (failure) {
      return void clear(problem, el("div", { class: "error", text: `not JSON: ${failure.message}` }));
    }
    try {
      // With an operator key in this browser: one signature for the agents the selector
      // names now (the job reaches no other).
      const key = await operatorKey();
      if (key) {
        const { data: matched } = await api(`/api/agents${query({ selector: selector.value.trim() })}`);
        const ids = matched.agents.map((a) => a.agentId);
        body.intent = await signIntent(key, body.command, body.args, ids, 3_600_000);
      }
      const { data } = await api("/api/jobs", { method: "POST", body });
      location.hash = `#/jobs/${encodeURIComponent(data.jobId)}`;
    } catch (failure) {
      clear(problem, el("div", { class: "error", text: String(failure) }));
    }
  });

  function row(job) {
    const selectorText = typeof job.selector === "string" ? job.selector : JSON.stringify(job.selector);
    return el("tr", { "data-job": job.jobId, "data-state": job.state },
      el("td", { text: time(job.createdAt) }),
      el("td", {}, el("a", { href: `#/jobs/${encodeURIComponent(job.jobId)}`, text: job.jobId })),
      el("td", { text: job.command }),
      el("td", { text: selectorText }),
      el("td", {}, el("span", { class: `state ${job.state}`, text: job.state })),
      el("td", { class: "num", text: `${job.progress.done} / ${job.progress.total}` }));
  }

  async function load() {
    try {
      const { data } = await api("/api/jobs?limit=50");
      clear(tbody, data.jobs.map(row));
      if (!data.jobs.length) tbody.append(el("tr", {}, el("td", { colspan: 6, class: "muted", text: "no jobs yet" })));
    } catch (failure) {
      if (failure.status !== 401) clear(problem, el("div", { class: "error", text: String(failure) }));
    }
  }

  function onEvent(type, event) {
    const shown = tbody.querySelector(`[data-job="${CSS.escape(event.jobId)}"]`);
    if (shown) load();
  }

  const stream = new EventStream({ type: "job" }, onEvent, streamState).start();
  load();
  return { stop: () => { clearTimeout(previewTimer); stream.stop(); } };
}

function jobView(root, jobId, streamState) {
  const state = el("span", { id: "job-state", class: "state" });
  const summary = el("dl", { class: "meta" });
  const bar = el("progress", { id: "job-progress", max: 1, value: 0 });
  const cancel = el("button", { type: "button", id: "job-cancel", class: "danger", text: "Cancel job", hidden: true });
  const problem = el("div");
  const tbody = el("tbody");
  clear(root, el("h1", {}, `Job ${jobId} `, state),
    el("div", { class: "panel" }, el("div", { class: "toolbar" }, bar, cancel), summary, problem),
    el("div", { class: "panel" }, el("table", { class: "list", id: "job-agents" },
      el("thead", {}, el("tr", {}, ["agent", "state", "reason", "command", "started", "ended"].map((h) => el("th", { text: h })))),
      tbody)));

  function show(job) {
    state.textContent = job.state;
    state.className = `state ${job.state}`;
    state.dataset.state = job.state;
    bar.max = Math.max(1, job.progress.total);
    bar.value = job.progress.done;
    cancel.hidden = ENDED.has(job.state);
    const counts = Object.entries(job.counts).filter(([, n]) => n).map(([s, n]) => `${n} ${s}`).join(", ");
    const rows = [
      ["selector", typeof job.selector === "string" ? job.selector : JSON.stringify(job.selector)],
      ["command", `${job.command} ${JSON.stringify(job.args || {})}`],
      ["agents", counts || "none"],
      ["at once", String(job.maxConcurrency)],
      ["max errors", String(job.maxErrors)],
      ["stopped", job.stopReason || ""],
      ["first error", job.firstError ? `${job.firstError.agentId}: ${job.firstError.code} ${job.firstError.message || ""}` : ""],
      ["created", time(job.createdAt)],
    ];
    clear(summary, rows.filter(([, v]) => v).flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
    clear(tbody, (job.agents || []).map((t) => el("tr", { "data-agent": t.agentId, "data-state": t.state },
      el("td", {}, agentLink(t.agentId)),
      el("td", {}, el("span", { class: `state ${t.state}`, text: t.state })),
      el("td", { text: [t.reason, t.message].filter(Boolean).join(": "), title: t.message || "" }),
      el("td", {}, t.commandId ? el("a", { href: `#/commands?agentId=${encodeURIComponent(t.agentId)}`, text: t.commandId }) : ""),
      el("td", { text: t.startedAt ? time(t.startedAt) : "" }),
      el("td", { text: t.endedAt ? time(t.endedAt) : "" }))));
  }

  let loading = null;
  let again = false;
  async function load() {
    if (loading) return void (again = true); // one read at a time; the last event wins
    loading = api(`/api/jobs/${encodeURIComponent(jobId)}?limit=${PAGE}`);
    try {
      show((await loading).data);
    } catch (failure) {
      if (failure.status !== 401) clear(problem, el("div", { class: "error", text: String(failure) }));
    } finally {
      loading = null;
      if (again) {
        again = false;
        load();
      }
    }
  }

  cancel.addEventListener("click", async () => {
    try {
      show((await api(`/api/jobs/${encodeURIComponent(jobId)}`, { method: "DELETE" })).data);
      load();
    } catch (failure) {
      clear(problem, el("div", { class: "error", text: String(failure) }));
    }
  });

  function onEvent(type, event) {
    if (event.jobId === jobId) load();
  }

  const stream = new EventStream({ type: "job" }, onEvent, streamState).start();
  load();
  return { stop: () => stream.stop() };
}
