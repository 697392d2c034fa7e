#!/usr/bin/env python3
"""Plot per-epoch metrics of training runs (metrics.jsonl of `env2 train` or tools/torch_train_ref.py).

    tools/plot_metrics.py --out docs/accuracy_vs_time.png --x wall_s --y test_acc \\
        runs/fmnist/metrics.jsonl:env2 runs/fmnist-torch/metrics.jsonl:PyTorch

Each RUN argument is PATH[:LABEL] (default label: the run directory's name); every run becomes one
curve in its own colour, with a marker per epoch.  Writes a PNG (its own encoder: zlib + struct,
anti-aliased lines, a built-in 5x7 bitmap font) or, with --svg or an --out ending in .svg, an SVG.
Standard library only.

Accuracy keys (ending in "acc") are shown in percent; x = wall_s is shown in seconds, minutes or
hours depending on the range.  Records where x or y is missing or null are skipped.
"""
import argparse
import json
import math
import os
import struct
import sys
import zlib

# ---------------------------------------------------------------------------------------------
# 5x7 bitmap font: 7 rows per glyph, 5 bits per row (bit 4 = leftmost column)
# ---------------------------------------------------------------------------------------------

FONT = {
    " ": (0, 0, 0, 0, 0, 0, 0),
    "0": (0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E), "1": (0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E),
    "2": (0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F), "3": (0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E),
    "4": (0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02), "5": (0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E),
    "6": (0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E), "7": (0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08),
    "8": (0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E), "9": (0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C),
    "A": (0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11), "B": (0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E),
    "C": (0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E), "D": (0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C),
    "E": (0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F), "F": (0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10),
    "G": (0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F), "H": (0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11),
    "I": (0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E), "J": (0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C),
    "K": (0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11), "L": (0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F),
    "M": (0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11), "N": (0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11),
    "O": (0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E), "P": (0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10),
    "Q": (0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D), "R": (0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11),
    "S": (0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E), "T": (0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04),
    "U": (0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E), "V": (0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04),
    "W": (0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A), "X": (0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11),
    "Y": (0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04), "Z": (0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F),
    "a": (0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F), "b": (0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1E),
    "c": (0x00, 0x00, 0x0E, 0x10, 0x10, 0x11, 0x0E), "d": (0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F),
    "e": (0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E), "f": (0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08),
    "g": (0x00, 0x0F, 0x11, 0x11, 0x0F, 0x01, 0x0E), "h": (0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11),
    "i": (0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E), "j": (0x02, 0x00, 0x06, 0x02, 0x02, 0x12, 0x0C),
    "k": (0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12), "l": (0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E),
    "m": (0x00, 0x00, 0x1A, 0x15, 0x15, 0x11, 0x11), "n": (0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11),
    "o": (0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E), "p": (0x00, 0x00, 0x1E, 0x11, 0x1E, 0x10, 0x10),
    "q": (0x00, 0x00, 0x0D, 0x13, 0x0F, 0x01, 0x01), "r": (0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10),
    "s": (0x00, 0x00, 0x0E, 0x10, 0x0E, 0x01, 0x1E), "t": (0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06),
    "u": (0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0D), "v": (0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04),
    "w": (0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0A), "x": (0x00, 0x00, 0x11, 0x0A, 0x04, 0x0A, 0x11),
    "y": (0x00, 0x00, 0x11, 0x11, 0x0F, 0x01, 0x0E), "z": (0x00, 0x00, 0x1F, 0x02, 0x04, 0x08, 0x1F),
    ".": (0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C), ",": (0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08),
    ":": (0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00), ";": (0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x04, 0x08),
    "-": (0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00), "_": (0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F),
    "%": (0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03), "(": (0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02),
    ")": (0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08), "/": (0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00),
    "+": (0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00), "=": (0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00),
    "[": (0x0E, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0E), "]": (0x0E, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0E),
    "<": (0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02), ">": (0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08),
    "?": (0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04), "!": (0x04, 0x04, 0x04, 0x04, 0x04, 0x00, 0x04),
    "'": (0x0C, 0x04, 0x08, 0x00, 0x00, 0x00, 0x00), '"': (0x0A, 0x0A, 0x0A, 0x00, 0x00, 0x00, 0x00),
    "#": (0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A), "*": (0x00, 0x04, 0x15, 0x0E, 0x15, 0x04, 0x00),
    "|": (0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04), "&": (0x0C, 0x12, 0x14, 0x08, 0x15, 0x12, 0x0D),
}
GLYPH_W, GLYPH_H, ADVANCE = 5, 7, 6

# Okabe-Ito / tab10-like palette: distinct, colour-blind friendly first
PALETTE = [(0, 114, 178), (213, 94, 0), (0, 158, 115), (204, 121, 167), (230, 159, 0), (86, 180, 233),
           (120, 120, 120), (240, 228, 66), (148, 103, 189), (140, 86, 75)]
BLACK, WHITE, GRID, DARK = (0, 0, 0), (255, 255, 255), (225, 225, 225), (60, 60, 60)


def text_width(s, scale):
    return max(0, len(s) * ADVANCE * scale - scale)


def text_height(scale):
    return GLYPH_H * scale


# ---------------------------------------------------------------------------------------------
# PNG canvas
# ---------------------------------------------------------------------------------------------

class PngCanvas:
    def __init__(self, w, h, bg=WHITE):
        self.w, self.h = w, h
        self.px = bytearray(bytes(bg) * (w * h))
        self.clip = (0, 0, w, h)

    def set_clip(self, rect=None):
        self.clip = rect or (0, 0, self.w, self.h)

    def blend(self, x, y, c, a=1.0):
        x0, y0, x1, y1 = self.clip
        if not (x0 <= x < x1 and y0 <= y < y1) or a <= 0:
            return
        i = 3 * (y * self.w + x)
        if a >= 1:
            self.px[i:i + 3] = bytes(c)
            return
        p = self.px
        p[i] = int(p[i] + (c[0] - p[i]) * a + 0.5)
        p[i + 1] = int(p[i + 1] + (c[1] - p[i + 1]) * a + 0.5)
        p[i + 2] = int(p[i + 2] + (c[2] - p[i + 2]) * a + 0.5)

    def fill_rect(self, x, y, w, h, c):
        for yy in range(int(y), int(y + h)):
            for xx in range(int(x), int(x + w)):
                self.blend(xx, yy, c)

    def rect(self, x, y, w, h, c):
        self.hline(x, x + w - 1, y, c)
        self.hline(x, x + w - 1, y + h - 1, c)
        self.vline(x, y, y + h - 1, c)
        self.vline(x + w - 1, y, y + h - 1, c)

    def hline(self, x0, x1, y, c):
        for x in range(int(min(x0, x1)), int(max(x0, x1)) + 1):
            self.blend(x, int(y), c)

    def vline(self, x, y0, y1, c):
        for y in range(int(min(y0, y1)), int(max(y0, y1)) + 1):
            self.blend(int(x), y, c)

    def wu_line(self, x0, y0, x1, y1, c):
        """Xiaolin Wu's anti-aliased line between real coordinates (pixel centres at integers)."""
        steep = abs(y1 - y0) > abs(x1 - x0)
        if steep:
            x0, y0, x1, y1 = y0, x0, y1, x1
        if x0 > x1:
            x0, x1, y0, y1 = x1, x0, y1, y0
        dx = x1 - x0
        grad = (y1 - y0) / dx if dx else 1.0

        def plot(x, y, a):
            if steep:
                self.blend(y, x, c, a)
            else:
                self.blend(x, y, c, a)

        # end points
        xend = round(x0)
        yend = y0 + grad * (xend - x0)
        xgap = 1 - (x0 + 0.5 - math.floor(x0 + 0.5))
        xp1, yp1 = int(xend), int(math.floor(yend))
        f = yend - math.floor(yend)
        plot(xp1, yp1, (1 - f) * xgap)
        plot(xp1, yp1 + 1, f * xgap)
        inter = yend + grad
        xend = round(x1)
        yend = y1 + grad * (xend - x1)
        xgap = x1 + 0.5 - math.floor(x1 + 0.5)
        xp2, yp2 = int(xend), int(math.floor(yend))
        f = yend - math.floor(yend)
        plot(xp2, yp2, (1 - f) * xgap)
        plot(xp2, yp2 + 1, f * xgap)
        for x in range(xp1 + 1, xp2):
            fy = math.floor(inter)
            f = inter - fy
            plot(x, int(fy), 1 - f)
            plot(x, int(fy) + 1, f)
            inter += grad

    def line(self, x0, y0, x1, y1, c, width=1.0):
        """Thick anti-aliased line: parallel Wu lines half a pixel apart across the width."""
        n = max(1, int(round(width * 2)) - 1)
        dx, dy = x1 - x0, y1 - y0
        ln = math.hypot(dx, dy)
        if ln == 0:
            self.disc(x0, y0, width / 2, c)
            return
        nx, ny = -dy / ln, dx / ln
        for k in range(n):
            o = (k - (n - 1) / 2) * 0.5
            self.wu_line(x0 + nx * o, y0 + ny * o, x1 + nx * o, y1 + ny * o, c)

    def disc(self, cx, cy, r, c):
        for y in range(int(math.floor(cy - r - 1)), int(math.ceil(cy + r + 1)) + 1):
            for x in range(int(math.floor(cx - r - 1)), int(math.ceil(cx + r + 1)) + 1):
                d = math.hypot(x - cx, y - cy)
                self.blend(x, y, c, min(1.0, max(0.0, r + 0.5 - d)))

    def marker(self, x, y, c):
        self.disc(x, y, 3.2, c)

    def text(self, x, y, s, c=BLACK, scale=2, anchor="left", vertical=False):
        """Text with its top-left corner at (x, y) (anchor moves it: left, center, right).
        vertical: rotated 90 degrees counter-clockwise, reading bottom to top, centred on (x, y)
        along the text direction when anchor is center."""
        w = text_width(s, scale)
        if not vertical:
            x0 = x - (w // 2 if anchor == "center" else w if anchor == "right" else 0)
            for i, ch in enumerate(s):
                self._glyph(int(x0) + i * ADVANCE * scale, int(y), ch, c, scale, False)
        else:
            y0 = y + (w // 2 if anchor == "center" else 0)
            for i, ch in enumerate(s):
                self._glyph(int(x), int(y0) - i * ADVANCE * scale, ch, c, scale, True)

    def _glyph(self, x, y, ch, c, scale, vertical):
        rows = FONT.get(ch, FONT["?"])
        for r, bits in enumerate(rows):
            for col in range(GLYPH_W):
                if bits >> (GLYPH_W - 1 - col) & 1:
                    if vertical:  # column -> up, row -> right
                        self.fill_rect(x + r * scale, y - (col + 1) * scale, scale, scale, c)
                    else:
                        self.fill_rect(x + col * scale, y + r * scale, scale, scale, c)

    def save(self, path):
        raw = bytearray()
        row = 3 * self.w
        for y in range(self.h):
            raw.append(0)
            raw += self.px[y * row:(y + 1) * row]

        def chunk(tag, data):
            return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

        png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0))
               + chunk(b"IDAT", zlib.compress(bytes(raw), 9)) + chunk(b"IEND", b""))
        with open(path, "wb") as f:
            f.write(png)


# ---------------------------------------------------------------------------------------------
# SVG canvas (same drawing calls)
# ---------------------------------------------------------------------------------------------

def _hex(c):
    return "#%02x%02x%02x" % tuple(c)


def _esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


class SvgCanvas:
    def __init__(self, w, h, bg=WHITE):
        self.w, self.h = w, h
        self.items = ['<rect width="%d" height="%d" fill="%s"/>' % (w, h, _hex(bg))]
        self.clip = None
        self.nclip = 0

    def set_clip(self, rect=None):
        if self.clip:
            self.items.append("</g>")
        self.clip = rect
        if rect:
            self.nclip += 1
            x0, y0, x1, y1 = rect
            self.items.append('<clipPath id="c%d"><rect x="%d" y="%d" width="%d" height="%d"/></clipPath>'
                              '<g clip-path="url(#c%d)">' % (self.nclip, x0, y0, x1 - x0, y1 - y0, self.nclip))

    def fill_rect(self, x, y, w, h, c):
        self.items.append('<rect x="%g" y="%g" width="%g" height="%g" fill="%s"/>' % (x, y, w, h, _hex(c)))

    def rect(self, x, y, w, h, c):
        self.items.append('<rect x="%g" y="%g" width="%g" height="%g" fill="none" stroke="%s"/>'
                          % (x + 0.5, y + 0.5, w - 1, h - 1, _hex(c)))

    def hline(self, x0, x1, y, c):
        self.items.append('<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="%s"/>' % (x0, y + 0.5, x1 + 1, y + 0.5, _hex(c)))

    def vline(self, x, y0, y1, c):
        self.items.append('<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="%s"/>' % (x + 0.5, y0, x + 0.5, y1 + 1, _hex(c)))

    def line(self, x0, y0, x1, y1, c, width=1.0):
        self.items.append('<line x1="%.2f" y1="%.2f" x2="%.2f" y2="%.2f" stroke="%s" stroke-width="%g" '
                          'stroke-linecap="round"/>' % (x0, y0, x1, y1, _hex(c), width))

    def polyline(self, pts, c, width):
        self.items.append('<polyline points="%s" fill="none" stroke="%s" stroke-width="%g" stroke-linejoin="round"/>'
                          % (" ".join("%.2f,%.2f" % p for p in pts), _hex(c), width))

    def marker(self, x, y, c):
        self.items.append('<circle cx="%.2f" cy="%.2f" r="3.2" fill="%s"/>' % (x, y, _hex(c)))

    def text(self, x, y, s, c=BLACK, scale=2, anchor="left", vertical=False):
        # (x, y) is the top-left of the text box as in PngCanvas; SVG places the baseline, which
        # lies one cap height (the 7 font dots) below the top
        size = 9.7 * scale
        th = text_height(scale)
        a = {"left": "start", "center": "middle", "right": "end"}[anchor]
        if vertical:
            self.items.append('<text transform="translate(%g,%g) rotate(-90)" font-family="monospace" '
                              'font-size="%g" fill="%s" text-anchor="%s">%s</text>'
                              % (x + th, y, size, _hex(c), a, _esc(s)))
        else:
            self.items.append('<text x="%g" y="%g" font-family="monospace" font-size="%g" fill="%s" '
                              'text-anchor="%s">%s</text>' % (x, y + th, size, _hex(c), a, _esc(s)))

    def save(self, path):
        if self.clip:
            self.set_clip(None)
        with open(path, "w") as f:
            f.write('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">\n'
                    % (self.w, self.h, self.w, self.h))
            f.write("\n".join(self.items))
            f.write("\n</svg>\n")


# ---------------------------------------------------------------------------------------------
# data and axes
# ---------------------------------------------------------------------------------------------

def parse_run(arg):
    path, label = arg, None
    if ":" in arg:
        head, tail = arg.rsplit(":", 1)
        if tail and "/" not in tail and os.path.exists(head):
            path, label = head, tail
        elif tail and "/" not in tail and not os.path.exists(arg):
            path, label = head, tail
    if label is None:
        label = os.path.basename(os.path.dirname(os.path.abspath(path))) or path
    return path, label


def load_points(path, xkey, ykey):
    pts = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                sys.exit("plot_metrics: %s:%d: not JSON" % (path, n))
            x, y = rec.get(xkey), rec.get(ykey)
            if isinstance(x, bool) or isinstance(y, bool) or not isinstance(x, (int, float)) \
                    or not isinstance(y, (int, float)) or not math.isfinite(x) or not math.isfinite(y):
                continue
            pts.append((float(x), float(y)))
    return pts


def nice_step(span, target=6):
    if span <= 0:
        return 1.0
    raw = span / target
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag * 1.0000001:
            return m * mag
    return 10 * mag


def axis_range(lo, hi, fixed_lo=None, fixed_hi=None, target=6):
    if fixed_lo is not None:
        lo = fixed_lo
    if fixed_hi is not None:
        hi = fixed_hi
    if hi <= lo:
        pad = abs(lo) * 0.05 or 1.0
        lo, hi = lo - pad, hi + pad
    step = nice_step(hi - lo, target)
    a = lo if fixed_lo is not None else math.floor(lo / step + 1e-9) * step
    b = hi if fixed_hi is not None else math.ceil(hi / step - 1e-9) * step
    ticks = []
    t = math.ceil(a / step - 1e-9) * step
    while t <= b + step * 1e-9:
        ticks.append(0.0 if abs(t) < step * 1e-9 else t)
        t += step
    return a, b, step, ticks


def tick_label(v, step):
    """As many decimals as the tick step needs (0.25 -> 2, 2.5 -> 1, 20 -> 0)."""
    dec = 0
    while dec < 10 and abs(step * 10 ** dec - round(step * 10 ** dec)) > 1e-6 * step * 10 ** dec:
        dec += 1
    return "%.*f" % (dec, v)


KEY_NAMES = {"wall_s": "wall time", "test_acc": "test accuracy", "train_acc": "train accuracy",
             "val_acc": "validation accuracy", "test_loss": "test loss", "train_loss": "train loss",
             "val_loss": "validation loss", "images_per_s": "images/s", "lr": "learning rate"}


def axis_transform(key, values, percent):
    """-> (factor, label) for displaying values of key."""
    name = KEY_NAMES.get(key, key)
    if key.endswith("wall_s"):
        m = max(values) if values else 0
        if m > 3 * 3600:
            return 1 / 3600.0, name + " (h)"
        if m > 300:
            return 1 / 60.0, name + " (min)"
        return 1.0, name + " (s)"
    if percent and key.endswith("acc"):
        return 100.0, name + " (%)"
    return 1.0, name


# ---------------------------------------------------------------------------------------------
# plot
# ---------------------------------------------------------------------------------------------

def plot(canvas, series, xlabel, ylabel, title, xr, yr, scale):
    W, H = canvas.w, canvas.h
    x_lo, x_hi, x_step, x_ticks = xr
    y_lo, y_hi, y_step, y_ticks = yr
    ylabels = [tick_label(t, y_step) for t in y_ticks]
    xlabels = [tick_label(t, x_step) for t in x_ticks]
    th = text_height(scale)
    left = 16 + th + 14 + max(text_width(s, scale) for s in ylabels) + 10
    right = 24 + text_width(xlabels[-1], scale) // 2
    top = 20 + (th + 18 if title else 0)
    bottom = 10 + th + 12 + th + 20
    pw, ph = W - left - right, H - top - bottom
    if pw < 50 or ph < 50:
        sys.exit("plot_metrics: the image is too small")

    def X(v):
        return left + (v - x_lo) / (x_hi - x_lo) * (pw - 1)

    def Y(v):
        return top + (ph - 1) - (v - y_lo) / (y_hi - y_lo) * (ph - 1)

    # grid, ticks, labels
    for t, s in zip(y_ticks, ylabels):
        y = int(round(Y(t)))
        canvas.hline(left + 1, left + pw - 2, y, GRID)
        canvas.hline(left - 6, left - 1, y, BLACK)
        canvas.text(left - 10, y - th // 2, s, DARK, scale, "right")
    for t, s in zip(x_ticks, xlabels):
        x = int(round(X(t)))
        canvas.vline(x, top + 1, top + ph - 2, GRID)
        canvas.vline(x, top + ph, top + ph + 5, BLACK)
        canvas.text(x, top + ph + 10, s, DARK, scale, "center")
    canvas.rect(left, top, pw, ph, BLACK)
    if title:
        canvas.text(W // 2, 16, title, BLACK, scale, "center")
    canvas.text(left + pw // 2, top + ph + 10 + th + 12, xlabel, BLACK, scale, "center")
    canvas.text(16, top + ph // 2, ylabel, BLACK, scale, "center", vertical=True)

    # curves
    # markers on the box's edge stay whole; a curve beyond --xmin/--xmax/--ymin/--ymax is cut
    canvas.set_clip((left - 4, top - 4, left + pw + 4, top + ph + 4))
    for k, (label, pts) in enumerate(series):
        c = PALETTE[k % len(PALETTE)]
        sp = [(X(x), Y(y)) for x, y in pts]
        if isinstance(canvas, SvgCanvas) and len(sp) > 1:
            canvas.polyline(sp, c, 2.0)
        else:
            for (ax, ay), (bx, by) in zip(sp, sp[1:]):
                canvas.line(ax, ay, bx, by, c, 2.0)
        for px, py in sp:
            canvas.marker(px, py, c)
    canvas.set_clip(None)

    # legend in the corner with the fewest points
    lw = 34 + max(text_width(lbl, scale) for lbl, _ in series) + 12
    lh = 8 + len(series) * (th + 8)
    corners = {"tl": (left + 10, top + 10), "tr": (left + pw - lw - 10, top + 10),
               "bl": (left + 10, top + ph - lh - 10), "br": (left + pw - lw - 10, top + ph - lh - 10)}

    def crowd(pos):
        x0, y0 = pos
        n = 0
        for _, pts in series:
            for x, y in pts:
                if x0 - 14 <= X(x) <= x0 + lw + 14 and y0 - 14 <= Y(y) <= y0 + lh + 14:
                    n += 1
        return n

    lx, ly = min((corners[k] for k in ("br", "tl", "bl", "tr")), key=crowd)
    canvas.fill_rect(lx, ly, lw, lh, WHITE)
    canvas.rect(lx, ly, lw, lh, DARK)
    for k, (label, _) in enumerate(series):
        c = PALETTE[k % len(PALETTE)]
        yy = ly + 8 + k * (th + 8) + th // 2
        canvas.line(lx + 8, yy, lx + 28, yy, c, 2.0)
        canvas.marker(lx + 18, yy, c)
        canvas.text(lx + 34, yy - th // 2, label, BLACK, scale, "left")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("runs", nargs="+", metavar="RUN", help="PATH/metrics.jsonl[:LABEL]")
    p.add_argument("--out", required=True, help="output .png (or .svg)")
    p.add_argument("--x", default="wall_s", help="x key (default wall_s)")
    p.add_argument("--y", default="test_acc", help="y key (default test_acc)")
    p.add_argument("--svg", action="store_true", help="write SVG instead of PNG")
    p.add_argument("--title", default=None, help="default: 'Y vs X'; '' for none")
    p.add_argument("--xlabel", default=None)
    p.add_argument("--ylabel", default=None)
    p.add_argument("--xmin", type=float, default=None, help="in displayed units (e.g. minutes)")
    p.add_argument("--xmax", type=float, default=None)
    p.add_argument("--ymin", type=float, default=None, help="in displayed units (percent for accuracies)")
    p.add_argument("--ymax", type=float, default=None)
    p.add_argument("--no-percent", action="store_true", help="show accuracies as fractions")
    p.add_argument("--width", type=int, default=960)
    p.add_argument("--height", type=int, default=600)
    p.add_argument("--font-scale", type=int, default=2, help="pixels per font dot (PNG)")
    a = p.parse_args(argv)

    series = []
    for r in a.runs:
        path, label = parse_run(r)
        if not os.path.exists(path):
            sys.exit("plot_metrics: %s: no such file" % path)
        pts = load_points(path, a.x, a.y)
        if not pts:
            print("plot_metrics: warning: %s has no records with numeric %s and %s" % (path, a.x, a.y),
                  file=sys.stderr)
            continue
        series.append((label, pts))
    if not series:
        sys.exit("plot_metrics: nothing to plot")
    allx = [x for _, pts in series for x, _ in pts]
    ally = [y for _, pts in series for _, y in pts]
    fx, xlabel = axis_transform(a.x, allx, not a.no_percent)
    fy, ylabel = axis_transform(a.y, ally, not a.no_percent)
    series = [(lbl, [(x * fx, y * fy) for x, y in pts]) for lbl, pts in series]
    xs = [x for _, pts in series for x, _ in pts]
    ys = [y for _, pts in series for _, y in pts]
    x_lo = 0.0 if a.xmin is None and min(xs) >= 0 and a.x in ("wall_s", "step", "epoch") else min(xs)
    xr = axis_range(x_lo, max(xs), a.xmin, a.xmax, 8)
    ypad = 0.04 * (max(ys) - min(ys))
    yr = axis_range(min(ys) - ypad, max(ys) + ypad, a.ymin, a.ymax, 6)
    if a.xlabel is not None:
        xlabel = a.xlabel
    if a.ylabel is not None:
        ylabel = a.ylabel
    title = a.title if a.title is not None else "%s vs %s" % (KEY_NAMES.get(a.y, a.y), KEY_NAMES.get(a.x, a.x))
    svg = a.svg or a.out.lower().endswith(".svg")
    if a.svg and a.out.lower().endswith(".png"):
        a.out = a.out[:-4] + ".svg"
    if a.width < 200 or a.height < 150:
        sys.exit("plot_metrics: --width/--height must be at least 200 x 150")
    canvas = SvgCanvas(a.width, a.height) if svg else PngCanvas(a.width, a.height)
    plot(canvas, series, xlabel, ylabel, title, xr, yr, max(1, a.font_scale))
    d = os.path.dirname(os.path.abspath(a.out))
    os.makedirs(d, exist_ok=True)
    canvas.save(a.out)
    print("plot_metrics: wrote %s (%d run%s)" % (a.out, len(series), "" if len(series) == 1 else "s"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
