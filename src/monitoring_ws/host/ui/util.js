// Small DOM and formatting helpers. Text goes in as text (textContent), never as HTML.

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
  return node;
}

export function time(ms) {
  if (ms === null || ms === undefined) return "never";
  return new Date(ms).toLocaleString();
}

export function ago(ms, now = Date.now()) {
  if (ms === null || ms === undefined) return "never";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

export function pct(value) {
  return typeof value === "number" ? `${value.toFixed(1)}%` : "–";
}

export function agentLink(agentId) {
  return el("a", { href: `#/agents/${encodeURIComponent(agentId)}`, text: agentId });
}

function percentOf(value) {
  if (value && typeof value === "object" && !Array.isArray(value)) value = value.percent;
  return typeof value === "number" ? value : null;
}

// The same reading of a free-form metrics sample as the server's summary
// (monitoring_ws/host/summary.py): percents, the fullest disk, the 1-minute load.
export function summarize(ts, values) {
  values = values || {};
  let disk = values.disk;
  if (Array.isArray(disk)) {
    const percents = disk.map(percentOf).filter((p) => p !== null);
    disk = percents.length ? Math.max(...percents) : null;
  } else {
    disk = percentOf(disk);
  }
  let load = values.load;
  if (Array.isArray(load)) load = load.length ? load[0] : null;
  return {
    ts,
    cpu: percentOf(values.cpu),
    memory: percentOf(values.memory),
    disk,
    load: typeof load === "number" ? load : null,
  };
}
