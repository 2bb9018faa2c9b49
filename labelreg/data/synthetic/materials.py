"""Materials: fixed tileable noise textures, texture families and per-instance colour pickers."""
from __future__ import annotations

import colorsys

import numpy as np

TILE = 256  # noise tile size (power of two)


def _make_tiles() -> tuple[np.ndarray, np.ndarray]:
    """Two fixed tileable noise textures in [0, 1]: smooth (low) and fine (high)."""
    rng = np.random.default_rng(20240611)
    low = np.zeros((TILE, TILE))
    for cells, amp in ((4, 1.0), (8, 0.5), (16, 0.25), (32, 0.125)):
        grid = rng.random((cells, cells))
        # bilinear, periodic upsampling of a cells×cells grid to T×T
        x = np.arange(TILE) * cells / TILE
        i0 = np.floor(x).astype(int)
        fr = x - i0
        fr = fr * fr * (3 - 2 * fr)
        i1 = (i0 + 1) % cells
        rows = grid[i0] * (1 - fr)[:, None] + grid[i1] * fr[:, None]
        low += amp * (rows[:, i0] * (1 - fr)[None, :] + rows[:, i1] * fr[None, :])
    low = (low - low.min()) / (low.max() - low.min())
    high = rng.random((TILE, TILE))
    high = (high + np.roll(high, 1, 0) + np.roll(high, 1, 1)) / 3.0
    high = (high - high.min()) / (high.max() - high.min())
    return low, high


LOW, HIGH = _make_tiles()

# families
PAINT, WOOD, FABRIC, PLASTIC, ART, GLASS, SCREEN, METAL = range(8)


def hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    return colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))


class Mat:
    """A material: texture family, two colours, scale/orientation, plank width, emissive."""

    __slots__ = ("family", "c1", "c2", "scale", "orient", "plank", "emissive")

    def __init__(self, family, c1, c2=None, scale=1.0, orient=0, plank=0.0, emissive=False):
        self.family = family
        self.c1 = tuple(c1)
        self.c2 = tuple(c1 if c2 is None else c2)
        self.scale = scale
        self.orient = orient
        self.plank = plank
        self.emissive = emissive


def wood(rng, plank=0.0) -> Mat:
    h = rng.uniform(0.04, 0.12)
    s = rng.uniform(0.25, 0.75)
    v = rng.uniform(0.25, 0.9)
    if rng.random() < 0.15:  # pale / grey-washed wood
        s *= 0.35
    c1 = hsv(h, s, v)
    c2 = hsv(h - 0.01, min(1.0, s * 1.15), v * rng.uniform(0.5, 0.75))
    return Mat(WOOD, c1, c2, scale=rng.uniform(12.0, 40.0), orient=int(rng.integers(2)), plank=plank)


def fabric(rng, light=False) -> Mat:
    v = rng.uniform(0.55, 0.95) if light else rng.uniform(0.25, 0.9)
    c1 = hsv(rng.random(), rng.uniform(0.05, 0.6), v)
    return Mat(FABRIC, c1, scale=rng.uniform(0.6, 1.6))


def paint(rng, light=False) -> Mat:
    if light:
        c1 = hsv(rng.random(), rng.uniform(0.0, 0.25), rng.uniform(0.7, 0.97))
    else:
        c1 = hsv(rng.random(), rng.uniform(0.0, 0.55), rng.uniform(0.3, 0.95))
    return Mat(PAINT, c1, scale=rng.uniform(0.5, 2.0))


def brownish_paint(rng) -> Mat:  # cardboard, painted wood: overlaps the wood colours
    c1 = hsv(rng.uniform(0.05, 0.12), rng.uniform(0.3, 0.6), rng.uniform(0.45, 0.85))
    return Mat(PAINT, c1, scale=rng.uniform(0.5, 2.0))


def plastic(rng) -> Mat:
    c1 = hsv(rng.random(), rng.uniform(0.0, 0.8), rng.uniform(0.1, 0.95))
    return Mat(PLASTIC, c1)


def metal(rng) -> Mat:
    g = rng.uniform(0.35, 0.8)
    return Mat(METAL, (g, g, g * rng.uniform(0.95, 1.05)))


def pick(rng, options):
    """options: list of (probability, factory) — returns factory(rng)."""
    r = rng.random()
    acc = 0.0
    for p, fn in options:
        acc += p
        if r < acc:
            return fn(rng)
    return options[-1][1](rng)
