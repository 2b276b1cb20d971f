// A shell on the agent in the browser (xterm.js, shipped with the dashboard), and the
// replay of recorded sessions. The WebSocket carries the token as a subprotocol: a
// browser cannot send an Authorization header on it (docs/api.md, "Sessions and tunnels").

import { api, getToken } from "./api.js";
import { operatorKey, signIntent } from "./operator.js";
import { clear, el, time } from "./util.js";

const SUBPROTOCOL = "monitoring-ws.channel.v1";

function bearer(token) {
  const bytes = new TextEncoder().encode(token);
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return `monitoring-ws.bearer.${btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "")}`;
}

// xterm.js writes its renderer's CSS into <style> elements, which the dashboard's policy
// (style-src 'self', no inline styles) refuses. The same CSS goes into constructable
// stylesheets instead (CSSOM, which the policy allows): a <style> asked of the document
// becomes an inert element whose text feeds an adopted sheet, removed with it.
function adoptInlineStyles(doc) {
  const create = doc.createElement.bind(doc);
  doc.createElement = (tag, options) => {
    if (String(tag).toLowerCase() !== "style") return create(tag, options);
    const holder = create("xterm-style", options);
    holder.hidden = true;
    const sheet = new CSSStyleSheet();
    doc.adoptedStyleSheets = [...doc.adoptedStyleSheets, sheet];
    let css = "";
    Object.defineProperty(holder, "textContent", {
      get: () => css,
      set: (text) => {
        css = String(text ?? "");
        sheet.replaceSync(css);
      },
    });
    const remove = holder.remove.bind(holder);
    holder.remove = () => {
      doc.adoptedStyleSheets = doc.adoptedStyleSheets.filter((s) => s !== sheet);
      remove();
    };
    return holder;
  };
}
adoptInlineStyles(document);

function newTerminal(host) {
  const term = new globalThis.Terminal({ cols: 100, rows: 28, convertEol: false, scrollback: 2000 });
  term.open(host);
  return term;
}

export class ShellPanel {
  constructor(agentId) {
    this.agentId = agentId;
    this.status = el("span", { class: "hint", id: "shell-status", text: "" });
    this.screen = el("div", { class: "terminal", id: "shell-screen", hidden: true });
    this.openButton = el("button", { type: "button", id: "shell-open", text: "Open a shell", onclick: () => this.open() });
    this.closeButton = el("button", { type: "button", id: "shell-close", text: "Close", hidden: true, onclick: () => this.close() });
    this.recordings = el("tbody");
    this.player = el("div", { class: "terminal", id: "replay-screen", hidden: true });
    this.node = el("div", { class: "panel" },
      el("h2", { text: "Shell" }),
      el("div", { class: "toolbar" }, this.openButton, this.closeButton, this.status),
      this.screen,
      el("h2", { text: "Recorded sessions" }),
      el("table", { class: "list" },
        el("thead", {}, el("tr", {}, ["started", "by", "bytes out", "exit", ""].map((h) => el("th", { text: h })))),
        this.recordings),
      this.player);
    this.socket = null;
    this.term = null;
  }

  async open() {
    if (this.socket || this.opening) return;
    this.opening = true;
    this.screen.hidden = false;
    clear(this.screen);
    const term = (this.term = newTerminal(this.screen));
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const shell = { cols: term.cols, rows: term.rows, term: "xterm-256color" };
    const params = new URLSearchParams({ kind: "shell", ...shell });
    // With an operator key in this browser, the open is signed (agents may require it).
    try {
      const key = await operatorKey();
      if (key) {
        const signed = await signIntent(key, "shell", shell, [this.agentId], 60_000);
        params.set("intent", btoa(JSON.stringify(signed)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, ""));
      }
    } catch (failure) {
      this.opening = false;
      this.status.textContent = `cannot sign: ${failure.message || failure}`;
      return;
    }
    const url = `${scheme}//${location.host}/api/agents/${encodeURIComponent(this.agentId)}/channel?${params}`;
    const token = getToken();
    const socket = (this.socket = new WebSocket(url, token ? [SUBPROTOCOL, bearer(token)] : [SUBPROTOCOL]));
    this.opening = false;
    socket.binaryType = "arraybuffer";
    this.status.textContent = "connecting…";
    this.openButton.hidden = true;
    this.closeButton.hidden = false;
    const encoder = new TextEncoder();
    socket.onmessage = (message) => {
      if (message.data instanceof ArrayBuffer) {
        term.write(new Uint8Array(message.data));
        return;
      }
      const control = JSON.parse(message.data);
      if (control.type === "opened") {
        this.status.textContent = "connected (recorded)";
        term.focus();
      } else if (control.type === "refused") {
        this.status.textContent = `refused: ${control.message}`;
      } else if (control.type === "closed") {
        const how = control.exitCode === undefined ? control.reason : `exit ${control.exitCode}`;
        this.status.textContent = `ended (${how}) ${control.message || ""}`;
      }
    };
    socket.onclose = () => {
      this.socket = null;
      this.openButton.hidden = false;
      this.closeButton.hidden = true;
      if (this.status.textContent === "connecting…") this.status.textContent = "the server refused the connection";
      this.loadRecordings();
    };
    term.onData((data) => {
      if (socket.readyState === WebSocket.OPEN) socket.send(encoder.encode(data));
    });
    term.onResize(({ cols, rows }) => {
      if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "resize", cols, rows }));
    });
  }

  close() {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify({ type: "close" }));
    }
  }

  async loadRecordings() {
    try {
      const { data } = await api("/api/recordings");
      const mine = data.recordings.filter((r) => r.agentId === this.agentId).slice(0, 20);
      clear(this.recordings, mine.map((r) => el("tr", { "data-recording": r.id },
        el("td", { text: time(r.startedAt) }),
        el("td", { text: r.requestedBy || "" }),
        el("td", { text: r.bytesIn ?? "" }),
        el("td", { text: r.exitCode ?? r.reason ?? "…" }),
        el("td", {}, el("button", { type: "button", class: "replay", text: "replay", onclick: () => this.replay(r.id) })))));
    } catch (failure) {
      if (failure.status !== 403) this.status.textContent = String(failure);
    }
  }

  // Plays an asciicast v2 file: its "o" events at their times (gaps over a second cut).
  async replay(recordingId) {
    const response = await fetch(`/api/recordings/${recordingId}`, {
      headers: getToken() ? { Authorization: `Bearer ${getToken()}` } : {},
      cache: "no-store",
      credentials: "omit",
    });
    if (!response.ok) return;
    const [header, ...events] = (await response.text()).split("\n").filter(Boolean).map((line) => JSON.parse(line));
    this.player.hidden = false;
    clear(this.player);
    const term = newTerminal(this.player);
    term.resize(header.width, header.height);
    let clock = 0;
    for (const [at, kind, data] of events) {
      await new Promise((resolve) => setTimeout(resolve, Math.min(1000, Math.max(0, (at - clock) * 1000))));
      clock = at;
      if (kind === "o") term.write(data);
      else if (kind === "r") {
        const [cols, rows] = data.split("x").map(Number);
        term.resize(cols, rows);
      }
    }
    this.player.dataset.done = "true";
  }
}
