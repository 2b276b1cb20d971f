// The command console (send, follow, cancel) and the command rows both views show.

import { api, followOutput } from "./api.js";
import { createOperatorKey, forgetOperatorKey, importOperatorKey, operatorKey, signIntent } from "./operator.js";
import { agentLink, clear, el, time } from "./util.js";

const ENDED = new Set(["succeeded", "failed", "timed_out", "cancelled", "agent_disconnected"]);

export function commandTable(tbody, { agent = true } = {}) {
  const heads = ["created", agent ? "agent" : null, "command", "state", "transport", "requested by", "took"];
  return el("table", { class: "list commands" },
    el("thead", {}, el("tr", {}, heads.filter(Boolean).map((h) => el("th", { text: h })))),
    tbody);
}

function requester(record) {
  const by = record.requestedBy || {};
  return [by.label, by.credential].filter(Boolean).join(" · ") || by.address || "";
}

export function commandRow(record, { agent = true } = {}) {
  const took = record.finishedAt && record.createdAt ? `${record.finishedAt - record.createdAt} ms` : "";
  return el("tr", { "data-command": record.commandId, "data-state": record.state },
    el("td", { text: time(record.createdAt), title: record.commandId }),
    agent ? el("td", {}, agentLink(record.agentId)) : null,
    el("td", { text: record.command }),
    el("td", {}, el("span", { class: `state ${record.state}`, text: record.state })),
    el("td", { text: record.transport || "" }),
    el("td", { text: requester(record) }),
    el("td", { class: "num", text: took }));
}

// What a command answered, readably: run's stdout and stderr as text, the rest as JSON.
export function resultView(answer) {
  if (!answer) return el("p", { class: "muted", text: "no answer yet" });
  const parts = [];
  if (answer.ok === false || answer.error) {
    const error = answer.error || {};
    parts.push(el("div", { class: "error", text: `${error.code || "failed"}: ${error.message || ""}` }));
  }
  const result = answer.result;
  if (result && typeof result === "object" && result.streamed) {
    parts.push(el("div", { text: `exit code ${result.exitCode} · ${result.stdoutBytes} bytes of stdout, ${result.stderrBytes} of stderr (shown above as they came)` }));
  } else if (result && typeof result === "object" && ("stdout" in result || "stderr" in result)) {
    if ("exitCode" in result) parts.push(el("div", { text: `exit code ${result.exitCode}${result.truncated ? " (output truncated)" : ""}` }));
    parts.push(el("div", { class: "muted", text: "stdout" }), el("pre", { class: "stdout", text: result.stdout || "" }));
    if (result.stderr) parts.push(el("div", { class: "muted", text: "stderr" }), el("pre", { class: "stderr", text: result.stderr }));
  } else if (result !== undefined) {
    parts.push(el("pre", { class: "result", text: JSON.stringify(result, null, 2) }));
  }
  if (answer.durationMs !== undefined) parts.push(el("div", { class: "muted", text: `${answer.durationMs} ms on the agent` }));
  return el("div", {}, parts);
}

function labelId() {
  const bytes = crypto.getRandomValues(new Uint8Array(4));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

export class Console {
  constructor(agentId) {
    this.agentId = agentId;
    this.command = el("select", { id: "console-command", "aria-label": "command" });
    this.args = el("textarea", { id: "console-args", rows: 4, spellcheck: "false", "aria-label": "args" });
    this.args.value = "{}";
    this.timeout = el("input", { id: "console-timeout", type: "number", min: 1, value: 10000, "aria-label": "timeout (ms)" });
    this.wait = el("input", { id: "console-wait", type: "checkbox", checked: true });
    // Output as it comes (the agent's ``output`` feature): run's lines appear while it runs.
    this.streamed = el("input", { id: "console-stream-output", type: "checkbox", checked: true });
    this.stream = el("pre", { id: "console-stream", class: "stdout", hidden: true });
    this.streaming = null;
    this.sendButton = el("button", { class: "primary", type: "button", id: "console-send", text: "Send", onclick: () => this.send() });
    this.cancelButton = el("button", { class: "danger", type: "button", id: "console-cancel", text: "Cancel", hidden: true, onclick: () => this.cancel() });
    this.output = el("div", { id: "console-output" });
    this.label = null;
    this.commandId = null;
    // The operator's key in this browser: with one, every command is signed.
    this.key = null;
    this.keyLine = el("div", { id: "operator-key", class: "operator-key" });
    this.node = el("div", { class: "panel console" },
      el("h2", { text: "Command console" }),
      el("label", { for: "console-command", text: "command (as the agent advertises)" }), this.command,
      el("label", { for: "console-args", text: "args (JSON object)" }), this.args,
      el("div", { class: "toolbar" },
        el("label", {}, "timeout ms ", this.timeout),
        el("label", {}, this.wait, " wait for the result"),
        el("label", {}, this.streamed, " output as it comes"),
        el("span", { class: "grow" }),
        this.cancelButton, this.sendButton),
      this.keyLine,
      this.stream, this.output);
    operatorKey().then((key) => this.showKey(key));
  }

  showKey(key) {
    this.key = key;
    if (key) {
      clear(this.keyLine,
        el("span", { class: "muted", text: "signed with operator key " }),
        el("code", { id: "operator-key-id", text: key.keyId }), " ",
        el("code", { id: "operator-key-public", class: "muted", text: key.publicKey }), " ",
        el("button", { type: "button", id: "operator-key-forget", text: "Forget key", onclick: async () => { await forgetOperatorKey(); this.showKey(null); } }));
      return;
    }
    const seed = el("input", { id: "operator-key-seed", type: "password", placeholder: "seed from ctl keys create (base64)", "aria-label": "operator key seed" });
    const failed = (failure) => clear(this.keyLine, el("div", { class: "error", text: `operator key: ${failure.message || failure}` }));
    clear(this.keyLine,
      el("span", { class: "muted", text: "unsigned (no operator key in this browser) " }),
      el("button", { type: "button", id: "operator-key-create", text: "Create key", onclick: () => createOperatorKey().then((k) => this.showKey(k), failed) }), " ",
      seed, " ",
      el("button", { type: "button", id: "operator-key-import", text: "Import", onclick: () => importOperatorKey(seed.value).then((k) => this.showKey(k), failed) }));
  }

  offer(entry) {
    const offered = new Set();
    for (const details of Object.values(entry.details || {})) {
      for (const name of details?.capabilities?.commands || []) offered.add(name);
    }
    const chosen = this.command.value;
    clear(this.command, [...offered].sort().map((name) => el("option", { value: name, text: name })));
    if (offered.has(chosen)) this.command.value = chosen;
    this.sendButton.disabled = !offered.size;
    if (!offered.size) this.show(el("p", { class: "muted", text: "the agent offers no commands now (it is not connected)" }));
  }

  show(...nodes) {
    clear(this.output, nodes);
  }

  async send() {
    let args;
    try {
      args = JSON.parse(this.args.value || "{}");
      if (!args || typeof args !== "object" || Array.isArray(args)) throw new Error("args must be a JSON object");
    } catch (failure) {
      this.show(el("div", { class: "error", text: `args: ${failure.message}` }));
      return;
    }
    // The label ties the record's live events to this send (the server names the id).
    this.label = `dashboard:${labelId()}`;
    this.commandId = null;
    this.streaming?.abort();
    this.streaming = null;
    this.stream.hidden = true;
    this.stream.textContent = "";
    const streamed = this.streamed.checked;
    const body = {
      command: this.command.value,
      args,
      timeoutMs: this.timeout.value === "" ? 10000 : Number(this.timeout.value),
      // Streamed output is read from its own route while the command runs.
      wait: this.wait.checked && !streamed,
      requestedBy: this.label,
      ...(streamed ? { streamOutput: true } : {}),
    };
    this.show(el("p", { class: "muted", text: `sending ${body.command}…` }));
    this.sendButton.disabled = true;
    try {
      if (this.key) body.intent = await signIntent(this.key, body.command, args, [this.agentId], body.timeoutMs);
      const { status, data } = await api(`/api/agents/${encodeURIComponent(this.agentId)}/commands`, { method: "POST", body });
      if (status === 202) {
        this.follow(data.commandId);
        if (streamed) this.showOutput(data.commandId);
        const { data: record } = await api(`/api/commands/${encodeURIComponent(data.commandId)}`);
        this.update(record);
      } else {
        this.commandId = data.commandId;
        this.cancelButton.hidden = true;
        this.show(el("div", { id: "console-state", "data-state": data.ok ? "succeeded" : "failed", text: `${data.ok ? "succeeded" : "failed"} via ${data.transport || "?"}` }), resultView(data));
      }
    } catch (failure) {
      this.cancelButton.hidden = true;
      const extra = failure.body?.error?.commandId ? ` (command ${failure.body.error.commandId})` : "";
      this.show(el("div", { class: "error", id: "console-error", text: `${failure}${extra}` }));
    } finally {
      this.sendButton.disabled = false;
    }
  }

  // Chunks into one <pre> as they come (stderr marked), until the command ends.
  showOutput(commandId) {
    const abort = new AbortController();
    this.streaming = abort;
    this.stream.hidden = false;
    const decode = (line) => line.base64 !== undefined
      ? new TextDecoder().decode(Uint8Array.from(atob(line.base64), (c) => c.charCodeAt(0)))
      : line.text;
    followOutput(commandId, (line) => {
      if (line.type === "output") {
        this.stream.append(line.stream === "stderr" ? el("span", { class: "stderr", text: decode(line) }) : decode(line));
      } else if (line.type === "dropped") {
        this.stream.append(el("span", { class: "muted", text: `[${line.toSeq - line.fromSeq + 1} chunk(s) no longer kept]\n` }));
      }
    }, abort.signal).catch((failure) => {
      if (!abort.signal.aborted) this.output.append(el("div", { class: "error", text: String(failure) }));
    });
  }

  follow(commandId) {
    this.commandId = commandId;
    this.cancelButton.hidden = false;
  }

  // A ``command`` event or a fetched record; only this console's command counts.
  update(record) {
    const mine = record.commandId === this.commandId || (this.label && record.requestedBy?.label === this.label);
    if (!mine) return;
    if (!this.commandId) this.follow(record.commandId);
    const ended = ENDED.has(record.state);
    this.cancelButton.hidden = ended;
    this.show(
      el("div", { id: "console-state", "data-state": record.state },
        el("span", { class: `state ${record.state}`, text: record.state }),
        ` ${record.command} · ${record.commandId} · via ${record.transport || "?"}`),
      ended ? resultView(record.result) : el("p", { class: "muted", text: "waiting for the agent…" }));
  }

  async cancel() {
    if (!this.commandId) return;
    try {
      const { data } = await api(`/api/commands/${encodeURIComponent(this.commandId)}`, { method: "DELETE" });
      this.update(data);
    } catch (failure) {
      this.output.append(el("div", { class: "error", text: String(failure) }));
    }
  }
}
