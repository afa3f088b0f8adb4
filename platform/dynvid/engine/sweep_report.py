"""A sweep's report: the front as a terminal table, a static PNG, a self-contained
interactive HTML page, and the data as JSON and CSV (``<sweep>/report/``).

- ``front.png`` (matplotlib): accuracy objective against cost objective, every trial a
  point, the Pareto front highlighted and joined, baselines (e.g. a paper's numbers) marked.
- ``report.html``: one file with no external resources (opens offline, attaches to MLflow).
  The data is embedded as JSON and the plot drawn as SVG by a small script: hovering a point
  shows that trial's knobs and metrics; front points are marked; a table lists every trial.
- ``sweep.json`` / ``trials.csv``: every trial's knobs, metrics, status and front
  membership; ``dynvid sweep show`` reads ``sweep.json``.
"""

from __future__ import annotations

import csv
import html
import json
import os
from pathlib import Path

from dynvid.tables import format_table

__all__ = ["front_table", "load_report", "report_data", "summary", "write_report"]

REPORT_FILES = {"png": "front.png", "html": "report.html", "json": "sweep.json", "csv": "trials.csv",
                "markdown": "front.md"}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def front_table(data: dict, markdown: bool = False, only_front: bool = False) -> str:
    """The trials of a report (:func:`report_data`, or ``sweep.json`` read back), front first
    and by cost: front mark, trial, knobs, objectives, status."""
    knobs, objectives = list(data["knobs"]), list(data["objectives"])
    trials = sorted(data["trials"], key=lambda t: (not t["front"], t["metrics"].get(data["cost_metric"], float("inf"))))
    rows = [["*" if t["front"] else "", t["trial_id"], *[_fmt(t["knobs"].get(k, "–")) for k in knobs],
             *[_fmt(t["metrics"][k]) if k in t["metrics"] else "–" for k in objectives],
             t["status"] if t["error"] is None else f"ERROR: {t['error'][:60]}"]
            for t in trials if t["front"] or not only_front]
    header = ["front", "trial", *knobs, *[f"{k} ({d})" for k, d in data["objectives"].items()], "status"]
    return format_table(header, rows, markdown)


def summary(data: dict) -> str:
    """One line: kind, method, search, trial count, front size, hypervolume."""
    return (f"{data['kind']} sweep of {data['method']} ({data['search']} search), {len(data['trials'])} trials, "
            f"{len(data['front'])} on the Pareto front, hypervolume {data['hypervolume']:.4g}")


def report_data(result) -> dict:
    """Everything the report shows of ``result`` (a ``SweepResult``), as plain data; written
    as ``sweep.json``."""
    spec = result.spec
    return {
        "name": spec.name, "method": spec.method, "kind": spec.kind, "search": spec.search,
        "source": spec.source, "objectives": spec.objectives, "knobs": spec.knobs,
        "accuracy_metric": spec.accuracy_metric, "cost_metric": spec.cost_metric,
        "init_from": spec.init_from, "path": str(result.path), "hypervolume": result.hypervolume,
        "reference_point": result.reference_point, "baselines": spec.baselines,
        "front": [result.trials[i].trial_id for i in result.front],
        "trials": [{"trial_id": t.trial_id, "knobs": t.knobs, "metrics": t.metrics, "status": t.status,
                    "error": t.error, "iterations": t.iterations, "front": i in result.front}
                   for i, t in enumerate(result.trials)],
    }


def write_report(result, out_dir: str | os.PathLike) -> dict:
    """Write every report file of ``result`` (a ``SweepResult``) to ``out_dir``; returns their
    paths and ``markdown_text`` (the table, for MLflow's ``results.md``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = report_data(result)
    paths = {k: str(out / v) for k, v in REPORT_FILES.items()}
    Path(paths["json"]).write_text(json.dumps(data, indent=2, default=str))
    _write_csv(data, paths["csv"])
    markdown = (f"# Sweep {data['name']}\n\n{summary(data)} (reference {data['reference_point']}).\n\n"
                f"{front_table(data, markdown=True)}\n")
    Path(paths["markdown"]).write_text(markdown)
    plot_front(data, paths["png"])
    Path(paths["html"]).write_text(render_html(data))
    return {**paths, "markdown_text": markdown}


def load_report(path: str | os.PathLike) -> dict:
    """``sweep.json`` of a sweep folder (or of its ``report/`` folder, or the file itself)."""
    p = Path(path)
    for candidate in (p, p / "report" / REPORT_FILES["json"], p / REPORT_FILES["json"]):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    raise FileNotFoundError(f"no sweep report at {path} (looked for report/{REPORT_FILES['json']})")


def _write_csv(data: dict, path: str) -> None:
    knobs = list(data["knobs"])
    metric_keys = sorted({k for t in data["trials"] for k in t["metrics"]})
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial_id", "front", "status", *knobs, *metric_keys])
        for t in data["trials"]:
            w.writerow([t["trial_id"], int(t["front"]), t["status"], *[t["knobs"].get(k) for k in knobs],
                        *[t["metrics"].get(k) for k in metric_keys]])


def _knob_label(knobs: dict) -> str:
    return ", ".join(f"{k.split('.')[-1]}={_fmt(v)}" for k, v in knobs.items())


def plot_front(data: dict, path: str) -> str:
    """The static plot: every trial, the front joined and labelled with its knobs, baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_key, y_key = data["cost_metric"], data["accuracy_metric"]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    done = [t for t in data["trials"] if x_key in t["metrics"] and y_key in t["metrics"]]
    others = [t for t in done if not t["front"]]
    front = sorted((t for t in done if t["front"]), key=lambda t: t["metrics"][x_key])
    if others:
        ax.scatter([t["metrics"][x_key] for t in others], [t["metrics"][y_key] for t in others],
                   color="#9aa5b1", s=36, label=f"trials ({len(done)})", zorder=2)
    if front:
        ax.plot([t["metrics"][x_key] for t in front], [t["metrics"][y_key] for t in front], color="#d9480f",
                marker="o", ms=7, lw=1.5, label=f"Pareto front ({len(front)})", zorder=3)
        for t in front:
            ax.annotate(_knob_label(t["knobs"]), (t["metrics"][x_key], t["metrics"][y_key]), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")
    for b in data["baselines"]:
        ax.scatter([b[x_key]], [b[y_key]], marker="*", s=160, color="black", zorder=4)
        ax.annotate(b["name"], (b[x_key], b[y_key]), fontsize=8, xytext=(5, -10), textcoords="offset points")
    ax.set_xlabel(f"{x_key} (lower is better)")
    ax.set_ylabel(f"{y_key} (higher is better)")
    ax.set_title(f"{data['name']}: {data['method']} {data['kind']} sweep, hypervolume {data['hypervolume']:.4g}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dynvid sweep __TITLE__</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1f2933; }
h1 { font-size: 20px; margin: 0 0 4px; } .summary { color: #52606d; margin: 0 0 12px; }
#plot { border: 1px solid #d9e2ec; background: #fff; }
circle.trial { fill: #9aa5b1; stroke: #fff; stroke-width: 1; cursor: pointer; }
circle.trial.front { fill: #d9480f; }
circle.trial:hover { stroke: #1f2933; stroke-width: 2; }
polyline.front { fill: none; stroke: #d9480f; stroke-width: 1.5; }
path.baseline { fill: #1f2933; } text.baseline { font-size: 11px; fill: #1f2933; }
.axis line, .axis path { stroke: #7b8794; } .axis text { font-size: 11px; fill: #52606d; }
#tooltip { position: absolute; display: none; background: #1f2933; color: #fff; padding: 8px 10px;
  border-radius: 4px; font-size: 12px; pointer-events: none; white-space: pre; }
table { border-collapse: collapse; margin-top: 16px; font-size: 13px; }
td, th { border-bottom: 1px solid #e4e7eb; padding: 3px 10px; text-align: right; }
tr.front td { background: #fff4e6; }
</style></head>
<body>
<h1>Sweep __TITLE__</h1>
<p class="summary">__SUMMARY__</p>
<svg id="plot" width="860" height="520" role="img" aria-label="accuracy against cost"></svg>
<div id="tooltip"></div>
__TABLE__
<script id="sweep-data" type="application/json">__DATA__</script>
<script>
(function () {
  const data = JSON.parse(document.getElementById("sweep-data").textContent);
  const svg = document.getElementById("plot"), tip = document.getElementById("tooltip");
  const NS = "http://www.w3.org/2000/svg";
  const W = +svg.getAttribute("width"), H = +svg.getAttribute("height");
  const m = {l: 70, r: 30, t: 20, b: 50};
  const xk = data.cost_metric, yk = data.accuracy_metric;
  const trials = data.trials.filter(t => xk in t.metrics && yk in t.metrics);
  const pts = trials.map(t => [t.metrics[xk], t.metrics[yk]]).concat(data.baselines.map(b => [b[xk], b[yk]]));
  function extent(vals) {
    let lo = Math.min(...vals), hi = Math.max(...vals);
    if (!isFinite(lo)) { lo = 0; hi = 1; }
    const pad = (hi - lo) * 0.08 || Math.abs(hi) * 0.1 || 1;
    return [lo - pad, hi + pad];
  }
  const [x0, x1] = extent(pts.map(p => p[0])), [y0, y1] = extent(pts.map(p => p[1]));
  const sx = v => m.l + (v - x0) / (x1 - x0) * (W - m.l - m.r);
  const sy = v => H - m.b - (v - y0) / (y1 - y0) * (H - m.t - m.b);
  function el(name, attrs, parent) {
    const e = document.createElementNS(NS, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    (parent || svg).appendChild(e);
    return e;
  }
  const axes = el("g", {class: "axis"});
  el("line", {x1: m.l, y1: H - m.b, x2: W - m.r, y2: H - m.b}, axes);
  el("line", {x1: m.l, y1: m.t, x2: m.l, y2: H - m.b}, axes);
  // enough decimals to tell neighbouring ticks apart, however narrow the range
  const decimals = (lo, hi) => Math.max(0, Math.min(8, Math.ceil(-Math.log10((hi - lo) / 5)) + 1));
  const dx = decimals(x0, x1), dy = decimals(y0, y1);
  for (let i = 0; i <= 5; i++) {
    const xv = x0 + (x1 - x0) * i / 5, yv = y0 + (y1 - y0) * i / 5;
    el("text", {x: sx(xv), y: H - m.b + 16, "text-anchor": "middle"}, axes).textContent = xv.toFixed(dx);
    el("text", {x: m.l - 6, y: sy(yv) + 4, "text-anchor": "end"}, axes).textContent = yv.toFixed(dy);
  }
  el("text", {x: (W + m.l) / 2, y: H - 12, "text-anchor": "middle"}, axes).textContent = xk + " (lower is better)";
  el("text", {x: 16, y: (H - m.b) / 2, transform: "rotate(-90 16 " + (H - m.b) / 2 + ")",
              "text-anchor": "middle"}, axes).textContent = yk + " (higher is better)";
  const front = trials.filter(t => t.front).sort((a, b) => a.metrics[xk] - b.metrics[xk]);
  el("polyline", {class: "front", points: front.map(t => sx(t.metrics[xk]) + "," + sy(t.metrics[yk])).join(" ")});
  for (const b of data.baselines) {
    const x = sx(b[xk]), y = sy(b[yk]);
    el("path", {class: "baseline", d: `M${x},${y - 7} L${x + 6},${y} L${x},${y + 7} L${x - 6},${y} Z`});
    el("text", {class: "baseline", x: x + 9, y: y + 4}).textContent = b.name;
  }
  function describe(t) {
    const lines = ["trial " + t.trial_id + (t.front ? "  (Pareto front)" : "") + "  " + t.status];
    for (const k in t.knobs) lines.push(k + " = " + t.knobs[k]);
    lines.push("");
    for (const k of Object.keys(t.metrics).sort()) {
      const v = t.metrics[k];
      lines.push(k + ": " + (Number.isInteger(v) ? v : v.toPrecision(4)));
    }
    return lines.join("\\n");
  }
  for (const t of trials) {
    const c = el("circle", {class: "trial" + (t.front ? " front" : ""), r: t.front ? 7 : 5,
                            cx: sx(t.metrics[xk]), cy: sy(t.metrics[yk]), "data-trial": t.trial_id});
    c.addEventListener("mousemove", ev => {
      tip.textContent = describe(t); tip.style.display = "block";
      tip.style.left = (ev.pageX + 14) + "px"; tip.style.top = (ev.pageY + 10) + "px";
    });
    c.addEventListener("mouseleave", () => { tip.style.display = "none"; });
  }
  svg.setAttribute("data-points", String(trials.length));
})();
</script>
</body></html>
"""


def render_html(data: dict) -> str:
    """The self-contained interactive page (see the module docstring)."""
    knobs = list(data["knobs"])
    objectives = list(data["objectives"])
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["trial", *knobs, *objectives, "front", "status"])
    body = []
    for t in data["trials"]:
        cells = [t["trial_id"], *[_fmt(t["knobs"].get(k, "–")) for k in knobs],
                 *[_fmt(t["metrics"][k]) if k in t["metrics"] else "–" for k in objectives],
                 "yes" if t["front"] else "", t["status"] if not t["error"] else f"ERROR: {t['error']}"]
        body.append(f"<tr class=\"{'front' if t['front'] else ''}\">"
                    + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    table = f"<table id=\"trials\"><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    summary = (f"{data['kind']} sweep of {data['method']} ({data['search']} search over "
               f"{', '.join(knobs)}): {len(data['trials'])} trials, {len(data['front'])} on the Pareto front, "
               f"hypervolume {data['hypervolume']:.4g}. Hover a point for its knobs and metrics.")
    payload = json.dumps(data, default=str, allow_nan=False).replace("</", "<\\/")
    return (_HTML.replace("__TITLE__", html.escape(data["name"])).replace("__SUMMARY__", html.escape(summary))
            .replace("__TABLE__", table).replace("__DATA__", payload))
