"""The text table and the self-contained HTML report (inline SVG charts, no dependency)."""

import html as _html
import math

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]
W, H = 640, 300
L, R, T, B = 60, 20, 30, 45  # margins


def esc(x):
    return _html.escape(str(x), quote=True)


# -- text -----------------------------------------------------------------------------------------
def fmt(v, unit=""):
    if v is None:
        return "-"
    if isinstance(v, float):
        v = f"{v:.3f}".rstrip("0").rstrip(".") if abs(v) < 100 else f"{v:.1f}"
    return f"{v} {unit}".strip()


def table(doc):
    rows = [("benchmark", "target", "measured", "result")]
    for name, b in doc["benchmarks"].items():
        if b["status"] != "ok":
            rows.append((name, "-", b["status"], (b["reason"] or "")[:60]))
        elif not b["targets"]:  # informational: show its headline (first p50) figure
            key = next((k for k in b["figures"] if "p50" in k), None)
            if key:
                f = b["figures"][key]
                rows.append((name, f"{key} (no target)", fmt(f["value"], f["unit"]), "info"))
        for t in b["targets"]:
            rows.append((name, f"{t['name']} {t['op']} {fmt(t['limit'], t['unit'])}",
                         fmt(t["value"], t["unit"]), "PASS" if t["pass"] else "MISS"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return f"git-autosync bench ({doc['mode']}, {doc['date']}, {doc['git_commit']})\n" + \
        "\n".join(lines)


# -- the README's table ------------------------------------------------------------------------
README_BEGIN = "<!-- bench:begin (written by make bench from tests/bench/out/results.json) -->"
README_END = "<!-- bench:end -->"


def markdown(doc):
    """The README's performance table: every target (its settings in its name), and the
    headline p50 of a benchmark without one, each with the run that measured it."""
    rows = ["| benchmark | measured | target | result | run |", "|---|---|---|---|---|"]
    for b in doc["benchmarks"].values():
        run = f"{b.get('date', doc['date'])[:16].replace('T', ' ')} " \
              f"{(b.get('git_commit') or doc['git_commit'] or '?')[:7]}"
        if b["status"] != "ok":
            rows.append(f"| {b['title']} | {b['status']}: {(b['reason'] or '')[:80]} | | | "
                        f"{run} |")
            continue
        if not b["targets"]:
            for key in [k for k in b["figures"] if "p50" in k][:2]:
                f = b["figures"][key]
                rows.append(f"| {b['title']}: {key} | {fmt(f['value'], f['unit'])} | | | "
                            f"{run} |")
        for t in b["targets"]:
            rows.append(f"| {b['title']}: {t['name']} | {fmt(t['value'], t['unit'])} | "
                        f"{t['op']} {fmt(t['limit'], t['unit'])} | "
                        f"{'PASS' if t['pass'] else 'MISS'} | {run} |")
    return "\n".join(rows)


def update_readme(path, doc):
    """Replace the table between README_BEGIN and README_END; False when the markers are
    not there (the README is left as it is)."""
    text = path.read_text()
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        return False
    path.write_text(text[:start + len(README_BEGIN)] + "\n" + markdown(doc) + "\n"
                    + text[end:])
    return True


# -- SVG ------------------------------------------------------------------------------------------
def nice_ticks(lo, hi, n=5):
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first, last = math.floor(lo / step), math.ceil(hi / step)
    return [round(k * step, 10) for k in range(first, max(last, first + 1) + 1)][:60]


def _label(v):
    if abs(v) >= 1000 and v == int(v):
        return f"{v / 1e6:g}M" if abs(v) >= 1e6 else f"{v / 1000:g}k"
    return f"{v:g}"


class Plot:
    """Axes mapping data to pixels, collecting SVG elements."""

    def __init__(self, title, xlabel, ylabel, xr, yr, logx=False):
        self.title, self.xlabel, self.ylabel, self.logx = title, xlabel, ylabel, logx
        self.xt = ([10 ** e for e in range(int(math.floor(math.log10(xr[0]))),
                                          int(math.ceil(math.log10(xr[1]))) + 1)]
                   if logx else nice_ticks(*xr))
        self.yt = nice_ticks(*yr)
        self.x0, self.x1 = (self.xt[0], self.xt[-1])
        self.y0, self.y1 = (self.yt[0], self.yt[-1])
        self.parts = []

    def px(self, x):
        if self.logx:
            f = (math.log10(x) - math.log10(self.x0)) / (math.log10(self.x1) - math.log10(self.x0))
        else:
            f = (x - self.x0) / ((self.x1 - self.x0) or 1)
        return L + f * (W - L - R)

    def py(self, y):
        return H - B - (y - self.y0) / ((self.y1 - self.y0) or 1) * (H - T - B)

    def add(self, s):
        self.parts.append(s)

    def svg(self, legend=()):
        out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
               f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">',
               f'<text x="{W / 2}" y="16" text-anchor="middle" font-size="13" '
               f'font-weight="bold">{esc(self.title)}</text>']
        for x in self.xt:
            X = self.px(x)
            out.append(f'<line x1="{X:.1f}" y1="{T}" x2="{X:.1f}" y2="{H - B}" stroke="#eee"/>'
                       f'<text x="{X:.1f}" y="{H - B + 14}" text-anchor="middle">'
                       f'{_label(x)}</text>')
        for y in self.yt:
            Y = self.py(y)
            out.append(f'<line x1="{L}" y1="{Y:.1f}" x2="{W - R}" y2="{Y:.1f}" stroke="#eee"/>'
                       f'<text x="{L - 5}" y="{Y + 4:.1f}" text-anchor="end">{_label(y)}</text>')
        out.append(f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="#333"/>'
                   f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="#333"/>')
        out.append(f'<text x="{(L + W - R) / 2}" y="{H - 8}" text-anchor="middle">'
                   f'{esc(self.xlabel)}</text>')
        out.append(f'<text x="14" y="{(T + H - B) / 2}" text-anchor="middle" '
                   f'transform="rotate(-90 14 {(T + H - B) / 2})">{esc(self.ylabel)}</text>')
        out += self.parts
        if legend:
            out.append(f'<rect x="{W - R - 185}" y="{T - 4}" width="185" '
                       f'height="{15 * len(legend) + 6}" fill="#fff" fill-opacity="0.85"/>')
        for i, (name, color) in enumerate(legend):
            y = T + 8 + 15 * i
            out.append(f'<rect x="{W - R - 180}" y="{y - 8}" width="10" height="10" '
                       f'fill="{color}"/><text x="{W - R - 165}" y="{y + 1}">{esc(name)}</text>')
        out.append("</svg>")
        return "\n".join(out)


def histogram(series, title, xlabel="ms", bins=30):
    """Overlaid histograms of {name: [samples]} on shared bins, p50 marked per series."""
    allv = [v for s in series.values() for v in s]
    if not allv:
        return ""
    lo, hi = min(allv), max(allv)
    lo, hi = (lo, hi) if hi > lo else (lo - 1, hi + 1)
    width = (hi - lo) / bins
    counts = {}
    for name, s in series.items():
        c = [0] * bins
        for v in s:
            c[min(bins - 1, int((v - lo) / width))] += 1
        counts[name] = c
    top = max(max(c) for c in counts.values())
    p = Plot(title, xlabel, "samples", (lo, hi), (0, top))
    legend = []
    for i, (name, c) in enumerate(counts.items()):
        color = COLORS[i % len(COLORS)]
        legend.append((name, color))
        for k, n in enumerate(c):
            if n:
                x0, x1 = p.px(lo + k * width), p.px(lo + (k + 1) * width)
                p.add(f'<rect x="{x0:.1f}" y="{p.py(n):.1f}" width="{max(1, x1 - x0 - 1):.1f}" '
                      f'height="{p.py(0) - p.py(n):.1f}" fill="{color}" fill-opacity="0.55"/>')
        s = sorted(series[name])
        med = s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2
        X = p.px(med)
        p.add(f'<line x1="{X:.1f}" y1="{T}" x2="{X:.1f}" y2="{H - B}" stroke="{color}" '
              f'stroke-dasharray="4 3"/><text x="{X + 3:.1f}" y="{T + 40 + 12 * i}" '
              f'fill="{color}">p50 {med:.0f}</text>')
    return p.svg(legend)


def lines(series, title, xlabel, ylabel, logx=False, hline=None, steps=False, vline=None):
    """{name: [(x, y)]} as lines with points; optional horizontal target and vertical marker."""
    pts = [pt for s in series.values() for pt in s]
    if not pts:
        return ""
    xs, ys = [x for x, _ in pts], [y for _, y in pts]
    ytop = max(ys + ([hline[0]] if hline else []))
    xr = (min(xs + [0] + ([vline[0]] if vline else [])),
          max(xs + ([vline[0]] if vline else [])))
    p = Plot(title, xlabel, ylabel, xr if not logx else (min(xs), max(xs)),
             (0, ytop * 1.05), logx=logx)
    legend = []
    for i, (name, s) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        legend.append((name, color))
        s = sorted(s)
        path = []
        for k, (x, y) in enumerate(s):
            if steps and k:
                path.append(f"{p.px(x):.1f},{p.py(s[k - 1][1]):.1f}")
            path.append(f"{p.px(x):.1f},{p.py(y):.1f}")
        if steps and s:
            path.insert(0, f"{p.px(xr[0]):.1f},{p.py(0):.1f}")
            path.insert(1, f"{p.px(s[0][0]):.1f},{p.py(0):.1f}")
        p.add(f'<polyline points="{" ".join(path)}" fill="none" stroke="{color}" '
              f'stroke-width="2"/>')
        for x, y in s:
            p.add(f'<circle cx="{p.px(x):.1f}" cy="{p.py(y):.1f}" r="3" fill="{color}">'
                  f'<title>{esc(name)}: {x:g}, {y:g}</title></circle>')
    if hline:
        Y = p.py(hline[0])
        p.add(f'<line x1="{L}" y1="{Y:.1f}" x2="{W - R}" y2="{Y:.1f}" stroke="#555" '
              f'stroke-dasharray="6 4"/><text x="{L + 4}" y="{Y - 4:.1f}" fill="#555">'
              f'{esc(hline[1])}</text>')
    if vline:
        X = p.px(vline[0])
        p.add(f'<line x1="{X:.1f}" y1="{T}" x2="{X:.1f}" y2="{H - B}" stroke="#555" '
              f'stroke-dasharray="2 3"/><text x="{X + 4:.1f}" y="{H - B - 6}" fill="#555">'
              f'{esc(vline[1])}</text>')
    return p.svg(legend)


# -- charts per benchmark -------------------------------------------------------------------------
def charts(name, b):
    s = b.get("series") or {}
    out = []
    if "histogram" in s:
        out.append(histogram(s["histogram"], f"{b['title']}"))
    if name == "burst" and "timeline" in s:
        tl = s["timeline"]
        out.append(lines({"files in HEAD": [tuple(p) for p in tl["points"]],
                          "files written": [tuple(p) for p in tl.get("progress", [])]},
                         f"Burst of {tl['files']} files: written vs committed",
                         "seconds since the first file was written", "files",
                         steps=True, vline=(tl["written"], "last file written")))
    if name == "scale" and "curve" in s:
        c = s["curve"]
        logx = len(c) > 1 and c[-1]["files"] / c[0]["files"] >= 10
        out.append(lines({"git autosync start": [(p["files"], p["daemon_start_s"]) for p in c],
                          "autosync-watch alone": [(p["files"], p["watcher_start_s"])
                                                   for p in c]},
                         "Start-up time vs tree size", "files (10 per directory)", "seconds",
                         logx=logx, hline=(3.0, "target 3 s")))
        out.append(lines({"daemon peak RSS": [(p["files"], p["daemon_hwm_mb"]) for p in c],
                          "autosync-watch peak RSS": [(p["files"], p["watcher_hwm_mb"])
                                                      for p in c]},
                         "Memory vs tree size", "files (10 per directory)", "MB",
                         logx=logx, hline=(80.0, "target 80 MB")))
    if "samples" in s:
        out.append(histogram(s["samples"], b["title"]))
    return [c for c in out if c]


CSS = """body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:left}th{background:#f4f4f4}.PASS{color:#080;font-weight:bold}.MISS{color:#b00;
font-weight:bold}.skipped{color:#888}.error{color:#b00}section{margin:2em 0}
.note{color:#555;font-size:90%}"""


def html(doc):
    m = doc["machine"]
    out = ["<!doctype html><html><head><meta charset='utf-8'>",
           "<title>git-autosync benchmarks</title>", f"<style>{CSS}</style></head><body>",
           "<h1>git-autosync benchmarks</h1>",
           f"<p>{esc(doc['date'])} &middot; commit <code>{esc(doc['git_commit'])}</code> "
           f"&middot; {esc(doc['mode'])} run</p>",
           "<table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>"
                               for k, v in m.items()) + "</table>",
           "<h2>Targets</h2><table><tr><th>benchmark</th><th>target</th><th>measured</th>"
           "<th>result</th></tr>"]
    for name, b in doc["benchmarks"].items():
        if b["status"] != "ok":
            out.append(f"<tr><td>{esc(name)}</td><td>-</td><td class='{b['status']}'>"
                       f"{esc(b['status'])}</td><td>{esc(b['reason'] or '')}</td></tr>")
        for t in b["targets"]:
            r = "PASS" if t["pass"] else "MISS"
            out.append(f"<tr><td>{esc(name)}</td><td>{esc(t['name'])} {esc(t['op'])} "
                       f"{esc(fmt(t['limit'], t['unit']))}</td><td>"
                       f"{esc(fmt(t['value'], t['unit']))}</td><td class='{r}'>{r}</td></tr>")
    out.append("</table>")
    for name, b in doc["benchmarks"].items():
        out.append(f"<section><h2>{esc(b['title'])}</h2><p><code>{esc(name)}</code> &middot; "
                   f"<span class='{esc(b['status'])}'>{esc(b['status'])}</span>"
                   + (f": {esc(b['reason'])}" if b["reason"] else "")
                   + (f" &middot; {b['seconds']} s" if b["seconds"] is not None else "") + "</p>")
        if b["figures"]:
            out.append("<table>" + "".join(
                f"<tr><th>{esc(k)}</th><td>{esc(fmt(v['value'], v['unit']))}</td></tr>"
                for k, v in b["figures"].items()) + "</table>")
        out += [f"<div>{c}</div>" for c in charts(name, b)]
        out += [f"<p class='note'>{esc(n)}</p>" for n in b["notes"]]
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
