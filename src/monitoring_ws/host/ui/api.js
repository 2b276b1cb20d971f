// The API client: the token (sessionStorage), JSON calls, and the live event stream
// (fetch, not EventSource, which cannot send an Authorization header).

const TOKEN_KEY = "monitoring-ws.token";

export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
  }
  toString() {
    return `${this.status} ${this.code}: ${this.message}`;
  }
}

const listeners = new Set();

export function onUnauthorized(listener) {
  listeners.add(listener);
}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function headers(extra = {}) {
  const token = getToken();
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function errorOf(response, signal = null) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const error = (body && body.error) || {};
  const failure = new ApiError(
    response.status,
    error.code || `http_${response.status}`,
    error.message || response.statusText,
    body,
  );
  // A stream stopped meanwhile (another call's 401 stops the view) tells no one.
  const stopped = signal !== null && signal.aborted;
  if (response.status === 401 && !stopped) for (const listener of listeners) listener(failure);
  return failure;
}

export async function api(path, { method = "GET", body } = {}) {
  const write = method !== "GET";
  const response = await fetch(path, {
    method,
    headers: headers(write ? { "Content-Type": "application/json" } : {}),
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
    credentials: "omit",
  });
  if (!response.ok) throw await errorOf(response);
  return { status: response.status, data: await response.json() };
}

// A command's output as it comes: GET /api/commands/:id/output?follow=true (NDJSON),
// opened again after a break from the last chunk read; resolves with the ``end`` line.
export async function followOutput(commandId, onLine, signal) {
  let after = 0;
  for (let attempt = 0; attempt < 20 && !signal.aborted; attempt++) {
    try {
      const response = await fetch(
        `/api/commands/${encodeURIComponent(commandId)}/output${query({ follow: "true", after })}`,
        { headers: headers(), cache: "no-store", credentials: "omit", signal },
      );
      if (!response.ok) throw await errorOf(response, signal);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let held = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        held += decoder.decode(value, { stream: true });
        const lines = held.split("\n");
        held = lines.pop();
        for (const text of lines) {
          if (!text.trim()) continue;
          const line = JSON.parse(text);
          if (line.seq) after = line.seq;
          if (line.toSeq) after = line.toSeq;
          onLine(line);
          if (line.type === "end") return line;
        }
      }
    } catch (failure) {
      if (failure instanceof ApiError || signal.aborted) throw failure;
    }
    await sleep(500, signal);
  }
  return null;
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });

// One stream per page: /api/events with the given filters, resumed with Last-Event-ID
// after a break (the server replays what was missed from its ring).
export class EventStream {
  constructor(params, onEvent, onState) {
    this.params = params;
    this.onEvent = onEvent;
    this.onState = onState;
    this.lastId = null;
    this.abort = new AbortController();
  }

  start() {
    this.run();
    return this;
  }

  stop() {
    this.abort.abort();
  }

  async run() {
    const signal = this.abort.signal;
    let delay = 500;
    while (!signal.aborted) {
      try {
        const extra = this.lastId ? { "Last-Event-ID": this.lastId } : {};
        const response = await fetch(`/api/events${query(this.params)}`, {
          headers: headers(extra),
          cache: "no-store",
          credentials: "omit",
          signal,
        });
        if (!response.ok) {
          const failure = await errorOf(response, signal);
          if (signal.aborted) return;
          this.onState("error", failure.toString());
          if (response.status === 401 || response.status === 403 || response.status === 400) return;
        } else {
          this.onState("live");
          delay = 500;
          await this.read(response.body.pipeThrough(new TextDecoderStream()).getReader());
        }
      } catch (failure) {
        if (signal.aborted) return;
      }
      this.onState("reconnecting");
      await sleep(delay, signal);
      delay = Math.min(delay * 2, 10000);
    }
  }

  async read(reader) {
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (this.dispatch(block) === "dropped") return; // fell behind: resume from lastId
      }
    }
  }

  dispatch(block) {
    let id = null;
    let type = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "id") id = value;
      else if (field === "event") type = value;
      else if (field === "data") data.push(value);
    }
    if (type === "dropped") return type;
    if (id !== null) this.lastId = id;
    if (data.length) this.onEvent(type, JSON.parse(data.join("\n")));
    return type;
  }
}
