// A small SVG line chart of the last few minutes (no library: a polyline, scaled in JS).

import { el } from "./util.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 600;
const HEIGHT = 110;
const MAX_POINTS = 2000;

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

export class Chart {
  constructor(key, title, { unit = "%", max = null, windowMs = 10 * 60 * 1000 } = {}) {
    this.unit = unit;
    this.max = max;
    this.windowMs = windowMs;
    this.points = [];
    this.value = el("span", { class: "muted", text: "no data" });
    this.line = svg("polyline", { points: "" });
    const grid = [0.25, 0.5, 0.75].map((f) => svg("line", { x1: 0, x2: WIDTH, y1: HEIGHT * f, y2: HEIGHT * f }));
    this.canvas = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, preserveAspectRatio: "none", role: "img", "aria-label": title });
    this.canvas.append(...grid, this.line);
    this.scale = el("span", { class: "muted" });
    this.node = el("div", { class: "chart", "data-chart": key, "data-points": "0" },
      el("div", { class: "title" }, el("span", { text: title }), this.value),
      this.canvas,
      el("div", { class: "muted" }, this.scale));
  }

  add(ts, value) {
    if (typeof value !== "number" || !Number.isFinite(value)) return;
    const points = this.points;
    if (points.length && ts < points[points.length - 1][0]) {
      if (points.some(([t]) => t === ts)) return; // a backfilled point the stream already gave
      points.push([ts, value]);
      points.sort((a, b) => a[0] - b[0]);
    } else if (!points.length || points[points.length - 1][0] !== ts) {
      points.push([ts, value]);
    }
    if (points.length > MAX_POINTS) points.splice(0, points.length - MAX_POINTS);
  }

  draw(now = Date.now()) {
    const start = now - this.windowMs;
    while (this.points.length && this.points[0][0] < start - 60000) this.points.shift();
    const visible = this.points.filter(([t]) => t >= start);
    this.node.dataset.points = String(visible.length);
    if (!visible.length) {
      this.line.setAttribute("points", "");
      return;
    }
    const top = this.max ?? Math.max(1, ...visible.map(([, v]) => v)) * 1.1;
    this.line.setAttribute("points", visible
      .map(([t, v]) => `${(((t - start) / this.windowMs) * WIDTH).toFixed(1)},${(HEIGHT - (Math.min(v, top) / top) * HEIGHT).toFixed(1)}`)
      .join(" "));
    const last = visible[visible.length - 1][1];
    this.value.textContent = this.unit === "%" ? `${last.toFixed(1)}%` : last.toFixed(2);
    this.scale.textContent = `last ${Math.round(this.windowMs / 60000)} min · ${visible.length} points · top ${this.unit === "%" ? `${top.toFixed(0)}%` : top.toFixed(2)}`;
  }
}
