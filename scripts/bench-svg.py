#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Draws a benchmark results CSV as an SVG bar chart.

Usage: bench-svg.py RESULTS.csv OUT.svg

Reads the CSV `make bench` (scripts/bench.sh) and `make run-pair`
(scripts/pair.sh) write, with the columns metric,value,baseline,ratio,target,
and writes an SVG with one horizontal bar per row, in the CSV's order. A
bar's length is the row's ratio on a log10 axis (decade ticks, from the
data's range, always including 1), starting at the axis's left end; a
vertical mark shows the row's target. The metric's name is at the left, the
ratio and the target at the right. A bar is green when its target (<=X or
>=X) is met, red when it is missed, and grey when the row has no target
(informational). A ratio that is missing, not a number, zero or negative is
unresolved: the row gets an empty, hatched bar and the word "unresolved".
A CSV with only its header (or nothing) gives the title and "no rows".

Standard library only, and deterministic: the same CSV gives the same bytes.
"""

import csv
import math
import sys

TITLE = "memreg benchmark: ratio against the same-run baseline"

GREEN = "#2e9d45"
RED = "#d0362b"
GREY = "#9a9a9a"
INK = "#222222"
FAINT = "#dddddd"
TARGET_INK = "#111111"

FONT = "DejaVu Sans Mono, Menlo, Consolas, monospace"
FONT_SIZE = 12
CHAR_W = 7.3  # width of one character at FONT_SIZE in a monospace font

ROW_H = 20
BAR_H = 12
PLOT_W = 560
MARGIN = 16
GAP = 12
TITLE_H = 44
AXIS_H = 34
LEGEND_H = 44

# The axis never spans more than these decades; longer bars are clipped.
MIN_DECADE = -6
MAX_DECADE = 6


def xml_text(s):
    """Escapes s for an XML text node or attribute value, dropping characters
    XML 1.0 does not allow."""
    out = []
    for ch in s:
        c = ord(ch)
        if c < 0x20 and ch not in "\t\n\r":
            continue
        if 0xD800 <= c <= 0xDFFF or c in (0xFFFE, 0xFFFF):
            continue
        out.append(ch)
    s = "".join(out)
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def num(s):
    """The float in s when it is a finite number, else None."""
    try:
        v = float(s)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def fmt(v):
    """A coordinate, always with the same digits."""
    s = "%.2f" % v
    s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


class Row:
    def __init__(self, fields):
        fields = [f.strip() for f in fields] + [""] * 5
        self.metric, self.value, _, self.ratio_text, self.target_text = fields[:5]
        ratio = num(self.ratio_text)
        if self.value.lower() == "unresolved" or ratio is None or ratio <= 0:
            ratio = None
        self.ratio = ratio
        # The target: ("<=", X) or (">=", X); None when informational or
        # malformed (then shown as text only).
        self.op = None
        self.limit = None
        t = self.target_text.replace(" ", "")
        if t[:2] in ("<=", ">="):
            limit = num(t[2:])
            if limit is not None:
                self.op, self.limit = t[:2], limit
        if self.ratio is None:
            self.state = "unresolved"
        elif self.op is None:
            self.state = "info"
        elif (self.ratio <= self.limit if self.op == "<=" else self.ratio >= self.limit):
            self.state = "met"
        else:
            self.state = "missed"

    def right_text(self):
        r = self.ratio_text
        if self.ratio is None:
            # A number that a log axis cannot show (0 or negative) is kept.
            r = "unresolved (ratio %s)" % r if num(r) is not None else "unresolved"
        if self.target_text:
            return "%s  target %s" % (r, self.target_text)
        return r


def read_rows(path):
    rows = []
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        for i, fields in enumerate(csv.reader(f)):
            if not fields or all(not x.strip() for x in fields):
                continue
            if i == 0 and fields[0].strip().lower() == "metric":
                continue
            rows.append(Row(fields))
    return rows


def decades(rows):
    """The axis's first and last decade exponents."""
    vals = [1.0]
    for r in rows:
        if r.ratio is not None:
            vals.append(r.ratio)
        if r.limit is not None and r.limit > 0:
            vals.append(r.limit)
    lo = math.floor(math.log10(min(vals)) + 1e-9)
    hi = math.ceil(math.log10(max(vals)) - 1e-9)
    lo = max(min(lo, 0), MIN_DECADE)
    hi = min(max(hi, 0), MAX_DECADE)
    while hi - lo < 2:  # at least two decades
        if hi <= -lo:
            hi += 1
        else:
            lo -= 1
    return lo, hi


def decade_label(e):
    if 0 <= e <= 4:
        return str(10 ** e)
    if -3 <= e < 0:
        return "%.*f" % (-e, 10.0 ** e)
    return "1e%d" % e


def text(x, y, s, anchor="start", size=FONT_SIZE, fill=INK, extra=""):
    return ('<text x="%s" y="%s" font-size="%d" fill="%s" text-anchor="%s"%s>%s</text>'
            % (fmt(x), fmt(y), size, fill, anchor, extra, xml_text(s)))


def draw(rows):
    name_w = max([len(r.metric) for r in rows] + [12]) * CHAR_W
    right_w = max([len(r.right_text()) for r in rows] + [24]) * CHAR_W
    plot_x = MARGIN + name_w + GAP
    width = plot_x + PLOT_W + GAP + right_w + MARGIN
    width = max(width, len(TITLE) * 9.5 + 2 * MARGIN)
    out = []

    def head(height):
        out.append('<?xml version="1.0" encoding="UTF-8"?>')
        out.append('<svg xmlns="http://www.w3.org/2000/svg" width="%s" height="%s" '
                   'viewBox="0 0 %s %s" font-family="%s">'
                   % (fmt(width), fmt(height), fmt(width), fmt(height), FONT))
        out.append('<title>%s</title>' % xml_text(TITLE))
        out.append('<defs><pattern id="hatch" patternUnits="userSpaceOnUse" width="6" '
                   'height="6" patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" '
                   'y2="6" stroke="%s" stroke-width="1.5"/></pattern></defs>' % GREY)
        out.append('<rect x="0" y="0" width="%s" height="%s" fill="#ffffff"/>'
                   % (fmt(width), fmt(height)))
        out.append(text(MARGIN, 26, TITLE, size=16, extra=' font-weight="bold"'))

    if not rows:
        width = len(TITLE) * 9.5 + 2 * MARGIN
        head(TITLE_H + 40)
        out.append(text(MARGIN, TITLE_H + 20, "no rows", fill=GREY))
        out.append("</svg>")
        return "\n".join(out) + "\n"

    counts = {k: sum(1 for r in rows if r.state == k)
              for k in ("met", "missed", "info", "unresolved")}
    top = TITLE_H + 12
    plot_h = len(rows) * ROW_H
    axis_y = top + plot_h
    height = axis_y + AXIS_H + LEGEND_H + MARGIN
    head(height)
    out.append(text(MARGIN, 42, "%d rows: %d met, %d missed, %d informational, "
                    "%d unresolved" % (len(rows), counts["met"], counts["missed"],
                                       counts["info"], counts["unresolved"]),
                    size=11, fill="#555555"))

    lo, hi = decades(rows)
    span = hi - lo

    def xpos(v):
        e = min(max(math.log10(v), lo), hi)
        return plot_x + (e - lo) / span * PLOT_W

    # Stripes, then the grid, then the bars above them.
    for i in range(len(rows)):
        if i % 2 == 1:
            out.append('<rect x="%s" y="%s" width="%s" height="%d" fill="#f4f4f4"/>'
                       % (fmt(MARGIN), fmt(top + i * ROW_H), fmt(width - 2 * MARGIN), ROW_H))
    for e in range(lo, hi):
        for m in range(2, 10):
            x = xpos(m * 10.0 ** e)
            out.append('<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="#eeeeee"/>'
                       % (fmt(x), fmt(top), fmt(x), fmt(axis_y)))
    for e in range(lo, hi + 1):
        x = xpos(10.0 ** e)
        out.append('<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s"%s/>'
                   % (fmt(x), fmt(top), fmt(x), fmt(axis_y + 5),
                      "#888888" if e == 0 else FAINT,
                      ' stroke-width="1.5"' if e == 0 else ""))
        out.append(text(x, axis_y + 18, decade_label(e), anchor="middle", size=11))
    out.append('<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s"/>'
               % (fmt(plot_x), fmt(axis_y), fmt(plot_x + PLOT_W), fmt(axis_y), INK))
    out.append(text(plot_x + PLOT_W / 2, axis_y + 32,
                    "ratio (log scale; value/baseline, baseline/value for *_speedup)",
                    anchor="middle", size=11, fill="#555555"))

    colour = {"met": GREEN, "missed": RED, "info": GREY}
    for i, r in enumerate(rows):
        y = top + i * ROW_H
        by = y + (ROW_H - BAR_H) / 2
        ty = y + ROW_H / 2 + 4
        out.append(text(plot_x - GAP, ty, r.metric, anchor="end"))
        if r.ratio is None:
            out.append('<rect x="%s" y="%s" width="%s" height="%d" fill="url(#hatch)" '
                       'fill-opacity="0.6" stroke="%s" stroke-dasharray="4 3"/>'
                       % (fmt(plot_x), fmt(by), fmt(PLOT_W), BAR_H, GREY))
            out.append('<rect x="%s" y="%s" width="%s" height="%d" fill="#ffffff"/>'
                       % (fmt(plot_x + 3), fmt(by + 1), fmt(10 * 6.7 + 6), BAR_H - 2))
            out.append(text(plot_x + 6, ty, "unresolved", fill="#555555", size=11))
        else:
            w = max(xpos(r.ratio) - plot_x, 1.0)
            out.append('<rect x="%s" y="%s" width="%s" height="%d" fill="%s"/>'
                       % (fmt(plot_x), fmt(by), fmt(w), BAR_H, colour[r.state]))
        if r.limit is not None and r.limit > 0:
            x = xpos(r.limit)
            out.append('<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s" stroke-width="2.5"/>'
                       % (fmt(x), fmt(y + 1), fmt(x), fmt(y + ROW_H - 1), TARGET_INK))
        fill = {"met": GREEN, "missed": RED}.get(r.state, "#555555")
        out.append(text(plot_x + PLOT_W + GAP, ty, r.right_text(), fill=fill))

    # The legend.
    ly = axis_y + AXIS_H + 18
    x = plot_x
    items = [("met", GREEN, "target met"), ("missed", RED, "target missed"),
             ("info", GREY, "informational (no target)"),
             ("unresolved", None, "unresolved"), ("target", None, "target")]
    for kind, col, label in items:
        if kind == "unresolved":
            out.append('<rect x="%s" y="%s" width="18" height="%d" fill="url(#hatch)" '
                       'fill-opacity="0.6" stroke="%s" stroke-dasharray="4 3"/>'
                       % (fmt(x), fmt(ly - BAR_H + 2), BAR_H, GREY))
        elif kind == "target":
            out.append('<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s" stroke-width="2.5"/>'
                       % (fmt(x + 9), fmt(ly - BAR_H - 1), fmt(x + 9), fmt(ly + 5), TARGET_INK))
        else:
            out.append('<rect x="%s" y="%s" width="18" height="%d" fill="%s"/>'
                       % (fmt(x), fmt(ly - BAR_H + 2), BAR_H, col))
        out.append(text(x + 24, ly, label, size=11))
        x += 24 + len(label) * 6.7 + 22
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv):
    if len(argv) != 3:
        sys.stderr.write("usage: %s RESULTS.csv OUT.svg\n" % argv[0])
        return 2
    svg = draw(read_rows(argv[1]))
    with open(argv[2], "w", encoding="utf-8", newline="\n") as f:
        f.write(svg)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
