"""The demo's procedural dataset: 64x64 RGB pictures of one shape, drawn by
code, each with a caption from a small grammar.

    a {size} {colour} {style} {shape} on a {background} background

Everything is a pure function of (attributes, seed): the same call draws the
same pixels on every machine (PIL's rasteriser, integer coordinates).
"""
import random

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ["circle", "square", "triangle", "star"]
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 230),
           "yellow": (235, 205, 40)}
BACKGROUNDS = {"black": (16, 16, 16), "white": (240, 240, 240), "gray": (128, 128, 128)}
STYLES = ["plain", "striped", "dotted"]
SIZES = {"small": 28, "large": 46}
SIZE = 64
SS = 4  # supersampling factor for anti-aliased edges
PERIOD = 16  # of the stripes and of the dot grid, in pixels

# The domains: the base learns plain circles and squares; each shard adds one
# shape or one style. DOMAINS[name] = (shapes, styles).
DOMAINS = {
    "base": (["circle", "square"], ["plain"]),
    "triangle": (["triangle"], ["plain"]),
    "star": (["star"], ["plain"]),
    "striped": (["circle", "square"], ["striped"]),
    "dotted": (["circle", "square"], ["dotted"]),
}
SHARDS = ["triangle", "star", "striped", "dotted"]


def caption(a):
    return f"a {a['size']} {a['colour']} {a['style']} {a['shape']} on a {a['background']} background"


def combos(domain):
    shapes, styles = DOMAINS[domain]
    out = []
    for sh in shapes:
        for st in styles:
            for c in COLOURS:
                for bg in BACKGROUNDS:
                    for sz in SIZES:
                        out.append(dict(shape=sh, style=st, colour=c, background=bg, size=sz))
    return out


def is_test_combo(a):
    """Held-out caption combinations: never drawn for training or validation.
    One (colour, background) pair per shape, rotated over the shapes."""
    k = (SHAPES.index(a["shape"]) + STYLES.index(a["style"])) % 4
    return a["colour"] == list(COLOURS)[k] and a["background"] == list(BACKGROUNDS)[k % 3]


def _star(cx, cy, r):
    import math
    pts = []
    for i in range(10):
        rr = r if i % 2 == 0 else r * 0.45
        t = -math.pi / 2 + i * math.pi / 5
        pts.append((cx + rr * math.cos(t), cy + rr * math.sin(t)))
    return pts


def _mask(shape, cx, cy, half):
    m = Image.new("L", (SIZE * SS, SIZE * SS), 0)
    d = ImageDraw.Draw(m)
    cx, cy, h = cx * SS, cy * SS, half * SS
    if shape == "circle":
        d.ellipse([cx - h, cy - h, cx + h, cy + h], fill=255)
    elif shape == "square":
        s = h * 0.86
        d.rectangle([cx - s, cy - s, cx + s, cy + s], fill=255)
    elif shape == "triangle":
        d.polygon([(cx, cy - h), (cx + h * 1.05, cy + h * 0.8), (cx - h * 1.05, cy + h * 0.8)], fill=255)
    elif shape == "star":
        d.polygon(_star(cx, cy + h * 0.08, h * 1.1), fill=255)
    return m


def _texture(style, colour, ox, oy):
    """The shape's fill at supersampled resolution, as an RGB array."""
    n = SIZE * SS
    c = np.array(colour, np.float32)
    dark = c * 0.3
    fill = np.broadcast_to(c, (n, n, 3)).copy()
    # Coarse on purpose: a latent pixel covers 8x8 pixels, and the VAE only
    # keeps textures about that coarse (a 10-pixel period was lost).
    if style == "striped":
        y = (np.arange(n) // SS + oy) % PERIOD
        fill[y < PERIOD // 2] = dark
    elif style == "dotted":
        yy, xx = np.mgrid[0:n, 0:n] / SS
        dy = (yy + oy) % PERIOD - PERIOD / 2
        dx = (xx + ox) % PERIOD - PERIOD / 2
        fill[dx * dx + dy * dy < 4.2 * 4.2] = dark
    return fill


def draw(a, seed):
    """uint8 [64, 64, 3] for attributes a; seed picks position and phase."""
    rng = random.Random(seed)
    half = SIZES[a["size"]] / 2
    slack = (SIZE - SIZES[a["size"]]) / 2 - 2
    cx = SIZE / 2 + rng.uniform(-slack, slack)
    cy = SIZE / 2 + rng.uniform(-slack, slack)
    ox, oy = rng.randrange(PERIOD), rng.randrange(PERIOD)
    n = SIZE * SS
    bg = np.broadcast_to(np.array(BACKGROUNDS[a["background"]], np.float32), (n, n, 3))
    m = np.asarray(_mask(a["shape"], cx, cy, half), np.float32)[..., None] / 255
    img = bg * (1 - m) + _texture(a["style"], COLOURS[a["colour"]], ox, oy) * m
    img = img.reshape(SIZE, SS, SIZE, SS, 3).mean(axis=(1, 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def split_of(seed):
    """train / val by seed (every 10th seed is validation)."""
    return "val" if seed % 10 == 9 else "train"


def make(domain, n, split, seed0=0):
    """n (image, caption, attributes) of a domain, from one split: train and
    val draw the non-held-out combinations, test the held-out ones."""
    cs = [a for a in combos(domain) if is_test_combo(a) == (split == "test")]
    imgs, caps, attrs = [], [], []
    s = seed0
    i = 0
    while len(imgs) < n:
        if split == "test" or split_of(s) == split:
            a = cs[i % len(cs)]
            imgs.append(draw(a, s * 7919 + hash_domain(domain)))
            caps.append(caption(a))
            attrs.append(a)
            i += 1
        s += 1
    return np.stack(imgs), caps, attrs


def hash_domain(d):
    return sum(ord(ch) * (i + 1) for i, ch in enumerate(d)) * 1000003


if __name__ == "__main__":
    import sys
    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/shapes.png"
    rows = []
    for d in DOMAINS:
        x, c, _ = make(d, 8, "train")
        rows.append(np.concatenate(list(x), axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).resize((8 * 128, len(rows) * 128), Image.NEAREST).save(out)
    print(out)
