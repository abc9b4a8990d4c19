// The LossGuard tab: for each run with LossGuard data, its verdict, the loss and gradient-norm curves with a
// marker at each diagnosis, and the diagnoses as cards, cause first. TensorBoard loads this module in an
// iframe whose base URL is the plugin's route prefix, and calls render().
//
// Run names, messages, subjects and evidence come from files anyone can write: they reach the page only
// through text nodes and attribute values (h(), svg()), never as HTML.

const POLL_MS = 5000;
const SVG_NS = "http://www.w3.org/2000/svg";
const SEVERITIES = ["error", "warning", "info"];
const SIZE = { width: 640, height: 200, left: 50, right: 14, top: 10, bottom: 24 };

export async function render() {
  document.head.append(h("link", { rel: "stylesheet", href: "style.css" }));
  const status = h("span", { class: "updated" });
  const body = h("div", { class: "body" });
  document.body.append(h("main", { class: "lossguard" }, header(status), body), tip);
  let shown = "";
  let busy = false;
  const refresh = async () => {
    if (busy) return;
    busy = true;
    try {
      const { runs } = await getJson("runs");
      const views = await Promise.all(runs.map((run) => getJson("run?" + new URLSearchParams({ run }))));
      const key = JSON.stringify(views);
      if (key !== shown) {
        shown = key;
        body.replaceChildren(...content(views));
      }
      status.textContent = `updated ${new Date().toLocaleTimeString()}`;
      status.classList.remove("problem");
    } catch (error) {
      status.textContent = `cannot load LossGuard data (${error.message}); retrying`;
      status.classList.add("problem");
    } finally {
      busy = false;
    }
  };
  await refresh();
  // Not while the tab is hidden (TensorBoard keeps the frame of a tab it leaves, at zero size).
  setInterval(() => document.hidden || innerWidth === 0 || refresh(), POLL_MS);
}

async function getJson(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

// -- DOM helpers: text always goes in as text ------------------------------------------------------------

function h(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children.filter((child) => child !== null && child !== ""));
  return node;
}

function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  node.append(...children);
  return node;
}

function severity(d) {
  return SEVERITIES.includes(d.severity) ? d.severity : "info";
}

function number(value) {
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value) && Math.abs(value) < 1e6) return String(value);
  const size = Math.abs(value);
  if (size !== 0 && (size >= 1e5 || size < 1e-3)) return value.toExponential(3).replace(/\.?0+e/, "e");
  return String(Number(value.toPrecision(4)));
}

// -- the page ---------------------------------------------------------------------------------------------

function header(status) {
  const key = (level, text) => h("span", { class: `key-marker ${level}` }, text);
  return h(
    "header",
    { class: "top" },
    h("h1", {}, "LossGuard"),
    h(
      "p",
      { class: "legend" },
      "Each diagnosis is marked on the curves at the step LossGuard made it:",
      key("error", "error"),
      key("warning", "warning"),
      key("info", "info"),
      "— hover a marker to read it, click it to open its card.",
    ),
    status,
  );
}

function content(views) {
  if (!views.length) {
    return [h("p", { class: "empty" }, "No run with LossGuard data yet: it appears after the first report.")];
  }
  return [h("div", { class: "runs" }, ...views.map(runPanel))];
}

function runPanel(view) {
  const several = view.reports.length > 1;
  const cards = view.diagnoses.map((d) => card(d, several));
  const level = view.verdict.level;
  const statuses = view.reports.filter((r) => !r.error).map((r) => (several ? `${r.file}: ${r.status}` : r.status));
  return h(
    "section",
    { class: `run ${level}`, "data-run": view.run },
    h("h2", {}, view.run),
    h(
      "p",
      { class: `verdict ${level}` },
      h("span", { class: "dot" }),
      h("span", { class: "text" }, view.verdict.text),
      statuses.length ? h("span", { class: "status" }, statuses.join("; ")) : "",
    ),
    ...view.reports.map(reportDetails),
    lossChart(view, cards),
    gradientChart(view, cards),
    cards.length ? h("h3", {}, `Diagnoses, cause first (${cards.length})`) : "",
    ...cards,
  );
}

function reportDetails(report) {
  if (report.error) return h("p", { class: "problem" }, report.error);
  const parts = [];
  if (report.gaps.length) {
    parts.push(
      h(
        "div",
        { class: "gaps" },
        h("b", {}, "Not watched"),
        h("ul", {}, ...report.gaps.map((g) => h("li", {}, h("code", {}, g.signal), ": ", g.reason))),
      ),
    );
  }
  if (report.notes.length) parts.push(h("ul", { class: "notes" }, ...report.notes.map((n) => h("li", {}, n))));
  const cost = ["LossGuard's own time: ", report.cost];
  if (report.cost && report.cost_detail) {
    // Over budget: one line, its why folded under it (on a healthy run it is no finding).
    parts.push(h("details", { class: "cost" }, h("summary", {}, ...cost), h("p", {}, report.cost_detail)));
  } else if (report.cost) {
    parts.push(h("p", { class: "cost" }, ...cost));
  }
  return parts.length ? h("div", { class: "report" }, ...parts) : "";
}

function card(d, showFile) {
  const level = severity(d);
  const pairs = Object.entries(d.evidence);
  const rows = [];
  for (let i = 0; i < pairs.length; i += 2) {
    const cells = pairs.slice(i, i + 2).flatMap(([name, value]) => [h("th", {}, name), h("td", {}, number(value))]);
    rows.push(h("tr", {}, ...cells));
  }
  return h(
    "article",
    { class: `card ${level}`, "data-code": d.code, "data-step": String(d.step), tabindex: "-1" },
    h(
      "header",
      {},
      h("span", { class: `badge ${level}` }, level),
      h("code", { class: "code" }, d.code),
      h("span", { class: "step" }, `step ${d.step}`),
      d.subject ? h("span", { class: "subject" }, d.subject) : "",
      showFile ? h("span", { class: "file" }, d.report) : "",
    ),
    d.title ? h("h4", {}, d.title) : "",
    h("p", { class: "message" }, d.message),
    rows.length ? h("table", { class: "evidence" }, h("tbody", {}, ...rows)) : "",
    d.remedies.length ? h("h5", {}, "What to try, most likely first") : "",
    d.remedies.length ? h("ol", { class: "remedies" }, ...d.remedies.map((r) => h("li", {}, r))) : "",
    d.documented
      ? h(
          "a",
          { class: "doc", href: `catalog.html#${encodeURIComponent(d.code)}`, target: "_blank", rel: "noopener" },
          `About ${d.code}`,
        )
      : "",
  );
}

function lossChart(view, cards) {
  const series = [{ label: "train loss", points: view.curves.train_loss, kind: "train" }];
  for (const [tag, points] of Object.entries(view.curves)) {
    if (tag.startsWith("val/")) series.push({ label: tag.slice(4), points, kind: "val" });
  }
  return chart("Loss", series, null, view, cards);
}

function gradientChart(view, cards) {
  const c = view.curves;
  const series = [
    { label: "median of each interval", points: c.grad_norm, kind: "norm" },
    { label: "largest", points: c.grad_norm_max, kind: "max" },
  ];
  const band = c.grad_norm_band_low && c.grad_norm_band_high ? [c.grad_norm_band_low, c.grad_norm_band_high] : null;
  return chart("Gradient norm (pre-clip)", series, band, view, cards);
}

// -- charts: inline SVG, log scale when every value is positive ------------------------------------------

function chart(title, allSeries, band, view, cards) {
  const diagnoses = view.diagnoses;
  const series = allSeries.filter((s) => s.points && s.points.length);
  const bandPoints = band ? bandOutline(band) : [];
  const values = [...series.flatMap((s) => s.points), ...bandPoints].map((p) => p[1]);
  const log = values.length > 0 && values.every((v) => v > 0);
  const keys = series.map((s) => h("span", { class: `key ${s.kind}` }, s.label));
  if (bandPoints.length) keys.push(h("span", { class: "key band" }, "normal band"));
  const caption = h("figcaption", {}, h("b", {}, title), h("span", { class: "scale" }, log ? "log scale" : ""), ...keys);
  if (!series.length) return h("figure", { class: "chart" }, caption, h("p", { class: "nodata" }, "no data yet"));

  // Up to the run's last step: a curve that stops early (a NaN loss is not drawn) shows where it stopped.
  const steps = [...series.flatMap((s) => s.points), ...bandPoints].map((p) => p[0]);
  steps.push(...diagnoses.map((d) => d.step), view.last_step ?? 0);
  const x = linearAxis(0, Math.max(1, ...steps), 6);
  const y = log ? logAxis(values.map(Math.log10)) : linearAxis(Math.min(...values), Math.max(...values), 5, true);
  const { width, height, left, right, top, bottom } = SIZE;
  const px = (step) => left + ((step - x.lo) / (x.hi - x.lo)) * (width - left - right);
  const py = (value) => top + ((y.hi - (log ? Math.log10(value) : value)) / (y.hi - y.lo)) * (height - top - bottom);

  const plot = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "plot", role: "img", "aria-label": title });
  for (const tick of y.ticks) {
    const at = top + ((y.hi - tick.at) / (y.hi - y.lo)) * (height - top - bottom);
    plot.append(svg("line", { class: "grid", x1: left, x2: width - right, y1: at, y2: at }));
    plot.append(svg("text", { class: "tick y", x: left - 6, y: at + 4 }, tick.label));
  }
  for (const tick of x.ticks) {
    plot.append(svg("text", { class: "tick x", x: px(tick.at), y: height - 6 }, tick.label));
  }
  plot.append(svg("line", { class: "axis", x1: left, x2: width - right, y1: height - bottom, y2: height - bottom }));
  if (bandPoints.length) {
    const outline = bandPoints.map((p) => `${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join(" ");
    plot.append(svg("polygon", { class: "band", points: outline }));
  }
  for (const s of series) {
    const points = s.points.map((p) => [px(p[0]), py(p[1])]);
    const path = points.map(([a, b], i) => `${i ? "L" : "M"}${a.toFixed(1)} ${b.toFixed(1)}`).join(" ");
    plot.append(svg("path", { class: `line ${s.kind}`, d: path }));
    if (points.length === 1) plot.append(svg("circle", { class: `dot ${s.kind}`, cx: points[0][0], cy: points[0][1], r: 3 }));
  }
  const stacked = new Map();
  diagnoses.forEach((d, i) => {
    const level = stacked.get(d.step) || 0;
    stacked.set(d.step, level + 1);
    plot.append(marker(d, cards[i], px(d.step), top + 6 + 12 * level, height - bottom));
  });
  return h("figure", { class: "chart" }, caption, plot);
}

function marker(d, card, x, y, bottom) {
  const level = severity(d);
  const label = `${level} ${d.code} at step ${d.step}: ${d.message}`;
  const group = svg(
    "g",
    { class: `marker ${level}`, tabindex: 0, role: "button", "data-code": d.code, "data-step": d.step, "aria-label": label },
    svg("title", {}, label),
    svg("line", { class: "stem", x1: x, x2: x, y1: y, y2: bottom }),
    svg("line", { class: "hit", x1: x, x2: x, y1: y, y2: bottom }),
    svg("circle", { cx: x, cy: y, r: 5 }),
  );
  group.addEventListener("mouseenter", (event) => showTip(d, event));
  group.addEventListener("mousemove", (event) => moveTip(event));
  group.addEventListener("mouseleave", hideTip);
  group.addEventListener("click", () => openCard(card));
  group.addEventListener("keydown", (event) => (event.key === "Enter" || event.key === " ") && openCard(card));
  return group;
}

function openCard(card) {
  hideTip();
  card.scrollIntoView({ behavior: "smooth", block: "start" });
  card.classList.remove("flash");
  void card.offsetWidth; // restart the highlight when the same card is opened twice
  card.classList.add("flash");
  card.focus({ preventScroll: true });
}

// The band is logged as two series at the same steps: its outline is the low side, then the high side back.
function bandOutline([low, high]) {
  const highAt = new Map(high.map(([step, value]) => [step, value]));
  const pairs = low.filter(([step]) => highAt.has(step)).map(([step, value]) => [step, value, highAt.get(step)]);
  if (!pairs.length) return [];
  return [...pairs.map(([s, lo]) => [s, lo]), ...pairs.reverse().map(([s, , hi]) => [s, hi])];
}

function logAxis(decades) {
  let lo = Math.floor(Math.min(...decades));
  let hi = Math.ceil(Math.max(...decades));
  if (hi === lo) [lo, hi] = [lo - 1, hi + 1];
  const stride = Math.ceil((hi - lo) / 5);
  hi = lo + stride * Math.ceil((hi - lo) / stride); // a labelled decade at the top too
  const ticks = [];
  for (let k = lo; k <= hi; k += stride) ticks.push({ at: k, label: k >= -3 && k <= 3 ? String(10 ** k) : `1e${k}` });
  return { lo, hi, ticks };
}

function linearAxis(min, max, count, widen = false) {
  if (max === min) [min, max] = [min - 1, max + 1];
  const raw = (max - min) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((f) => f * magnitude).find((s) => s >= raw);
  const lo = widen ? Math.floor(min / step) * step : min;
  const hi = widen ? Math.ceil(max / step) * step : max;
  const ticks = [];
  for (let at = Math.ceil(lo / step) * step; at <= hi + step / 1e6; at += step) ticks.push({ at, label: number(Number(at.toPrecision(6))) });
  return { lo, hi, ticks };
}

// -- the hover tip ----------------------------------------------------------------------------------------

const tip = h("div", { class: "tip", role: "tooltip", hidden: "" });

function showTip(d, event) {
  const level = severity(d);
  tip.replaceChildren(
    h("div", { class: "tip-head" }, h("span", { class: `badge ${level}` }, level), h("code", {}, d.code), ` step ${d.step}`),
    h("div", { class: "tip-message" }, d.message),
    h("div", { class: "tip-hint" }, "click to open its card"),
  );
  tip.hidden = false;
  moveTip(event);
}

function moveTip(event) {
  const x = Math.min(event.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
  const y = event.clientY + tip.offsetHeight + 24 > window.innerHeight ? event.clientY - tip.offsetHeight - 14 : event.clientY + 14;
  tip.style.left = `${Math.max(8, x)}px`;
  tip.style.top = `${Math.max(8, y)}px`;
}

function hideTip() {
  tip.hidden = true;
}
