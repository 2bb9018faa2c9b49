"""Procedurally generated indoor rooms, written to disk in the real dataset formats.

``write_synthetic_dataset`` renders box rooms seen through a pinhole camera and
writes them exactly as the real data sets lay them out, so that the demo and the
tests go through the same readers as real NYUv2 / PASCAL VOC data:

- ``nyu/nyu_depth_v2_labeled.mat``: MATLAB v7.3 (HDF5 with a 512-byte userblock
  holding the MATLAB text header), column-major: ``images`` N×3×W×H uint8,
  ``depths`` N×W×H float32 metres, ``labels`` N×W×H uint16 raw ids;
- ``nyu/splits.mat`` (``trainNdxs``/``testNdxs``, 1-based) and
  ``nyu/classMapping40.mat`` (``mapClass``, ``className``, ``allClassName``);
- ``nyu/depth_only/frame_XXXXX.h5``: unlabeled frames, ``rgb`` 3×H×W uint8 and
  ``depth`` H×W float32 metres;
- ``VOCdevkit/VOC2012``: the same labeled scenes as JPEGs and palette PNGs
  (raw → 40-class → VOC, with a 255 void band along object boundaries).

Scenes are ray cast in numpy: the room is the inside of an axis-aligned box and
every object is a set of axis-aligned cuboids and vertical cylinders; a z-buffer
keeps the nearest surface, so labels, occlusion and depth agree by construction.
Textures come from families shared between classes (wood, fabric, paint, ...)
with per-instance colours from overlapping ranges, so a local patch does not
identify the class; shape and context (chairs around tables, lamps and night
stands next to beds, pillows on beds, TVs on cabinets) have to.
"""
from __future__ import annotations

import colorsys
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "NYU40_CLASS_NAMES",
    "RAW_NAMES",
    "RAW_TO_NYU40",
    "NYU40_TO_VOC",
    "render_scene",
    "SyntheticPaths",
    "write_synthetic_dataset",
    "synthetic_paths",
    "dataset_exists",
]

# --------------------------------------------------------------------------- classes

NYU40_CLASS_NAMES: list[str] = [
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window",
    "bookshelf", "picture", "counter", "blinds", "desk", "shelves", "curtain",
    "dresser", "pillow", "mirror", "floor mat", "clothes", "ceiling", "books",
    "refridgerator", "television", "paper", "towel", "shower curtain", "box",
    "whiteboard", "person", "night stand", "toilet", "sink", "lamp", "bathtub",
    "bag", "otherstructure", "otherfurniture", "otherprop",
]
_C40 = {name: i + 1 for i, name in enumerate(NYU40_CLASS_NAMES)}  # 1-based, like mapClass

# (raw name, 40-class name). Several raw names share one 40-class id, like real NYUv2.
_RAW_TABLE: list[tuple[str, str]] = [
    ("wall", "wall"),
    ("floor", "floor"),
    ("ceiling", "ceiling"),
    ("bed", "bed"),
    ("chair", "chair"),
    ("office chair", "chair"),
    ("sofa", "sofa"),
    ("couch", "sofa"),
    ("table", "table"),
    ("coffee table", "table"),
    ("dining table", "table"),
    ("door", "door"),
    ("window", "window"),
    ("bookshelf", "bookshelf"),
    ("picture", "picture"),
    ("poster", "picture"),
    ("cabinet", "cabinet"),
    ("tv stand", "cabinet"),
    ("dresser", "dresser"),
    ("pillow", "pillow"),
    ("cushion", "pillow"),
    ("television", "television"),
    ("night stand", "night stand"),
    ("lamp", "lamp"),
    ("floor lamp", "lamp"),
    ("table lamp", "lamp"),
    ("box", "box"),
    ("cardboard box", "box"),
    ("books", "books"),
    ("curtain", "curtain"),
    ("rug", "floor mat"),
    ("person", "person"),
    ("plant", "otherprop"),
    ("vase", "otherprop"),
    ("bottle", "otherprop"),
    ("cup", "otherprop"),
    ("bag", "bag"),
    ("column", "otherstructure"),
    ("stool", "otherfurniture"),
]
RAW_NAMES: list[str] = [raw for raw, _ in _RAW_TABLE]
RAW_TO_NYU40: np.ndarray = np.array([_C40[c] for _, c in _RAW_TABLE], dtype=np.uint8)
_RAW = {name: i + 1 for i, name in enumerate(RAW_NAMES)}  # raw id, 1-based; 0 = unlabeled

# 0-based 40-class id -> VOC class index (0 background, 1..20 objects).
NYU40_TO_VOC: np.ndarray = np.zeros(40, dtype=np.int64)
for _name, _voc in (("chair", 9), ("table", 11), ("sofa", 18), ("television", 20), ("person", 15)):
    NYU40_TO_VOC[_C40[_name] - 1] = _voc
del _name, _voc

# raw id (0..R) -> VOC index (255 for raw 0 = unlabeled)
_RAW_TO_VOC = np.concatenate([[255], NYU40_TO_VOC[RAW_TO_NYU40.astype(np.int64) - 1]]).astype(np.uint8)

# --------------------------------------------------------------------------- textures

_T = 256  # noise tile size (power of two)


def _make_tiles() -> tuple[np.ndarray, np.ndarray]:
    """Two fixed tileable noise textures in [0, 1]: smooth (low) and fine (high)."""
    rng = np.random.default_rng(20240611)
    low = np.zeros((_T, _T))
    for cells, amp in ((4, 1.0), (8, 0.5), (16, 0.25), (32, 0.125)):
        grid = rng.random((cells, cells))
        # bilinear, periodic upsampling of a cells×cells grid to T×T
        x = np.arange(_T) * cells / _T
        i0 = np.floor(x).astype(int)
        fr = x - i0
        fr = fr * fr * (3 - 2 * fr)
        i1 = (i0 + 1) % cells
        rows = grid[i0] * (1 - fr)[:, None] + grid[i1] * fr[:, None]
        low += amp * (rows[:, i0] * (1 - fr)[None, :] + rows[:, i1] * fr[None, :])
    low = (low - low.min()) / (low.max() - low.min())
    high = rng.random((_T, _T))
    high = (high + np.roll(high, 1, 0) + np.roll(high, 1, 1)) / 3.0
    high = (high - high.min()) / (high.max() - high.min())
    return low, high


_LOW, _HIGH = _make_tiles()

# families
_PAINT, _WOOD, _FABRIC, _PLASTIC, _ART, _GLASS, _SCREEN, _METAL = range(8)


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    return colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))


class _Mat:
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


def _wood(rng, plank=0.0) -> _Mat:
    h = rng.uniform(0.04, 0.12)
    s = rng.uniform(0.25, 0.75)
    v = rng.uniform(0.25, 0.9)
    if rng.random() < 0.15:  # pale / grey-washed wood
        s *= 0.35
    c1 = _hsv(h, s, v)
    c2 = _hsv(h - 0.01, min(1.0, s * 1.15), v * rng.uniform(0.5, 0.75))
    return _Mat(_WOOD, c1, c2, scale=rng.uniform(12.0, 40.0), orient=int(rng.integers(2)), plank=plank)


def _fabric(rng, light=False) -> _Mat:
    v = rng.uniform(0.55, 0.95) if light else rng.uniform(0.25, 0.9)
    c1 = _hsv(rng.random(), rng.uniform(0.05, 0.6), v)
    return _Mat(_FABRIC, c1, scale=rng.uniform(0.6, 1.6))


def _paint(rng, light=False) -> _Mat:
    if light:
        c1 = _hsv(rng.random(), rng.uniform(0.0, 0.25), rng.uniform(0.7, 0.97))
    else:
        c1 = _hsv(rng.random(), rng.uniform(0.0, 0.55), rng.uniform(0.3, 0.95))
    return _Mat(_PAINT, c1, scale=rng.uniform(0.5, 2.0))


def _brownish_paint(rng) -> _Mat:  # cardboard, painted wood: overlaps the wood colours
    c1 = _hsv(rng.uniform(0.05, 0.12), rng.uniform(0.3, 0.6), rng.uniform(0.45, 0.85))
    return _Mat(_PAINT, c1, scale=rng.uniform(0.5, 2.0))


def _plastic(rng) -> _Mat:
    c1 = _hsv(rng.random(), rng.uniform(0.0, 0.8), rng.uniform(0.1, 0.95))
    return _Mat(_PLASTIC, c1)


def _metal(rng) -> _Mat:
    g = rng.uniform(0.35, 0.8)
    return _Mat(_METAL, (g, g, g * rng.uniform(0.95, 1.05)))


def _pick(rng, options):
    """options: list of (probability, factory) — returns factory(rng)."""
    r = rng.random()
    acc = 0.0
    for p, fn in options:
        acc += p
        if r < acc:
            return fn(rng)
    return options[-1][1](rng)


# --------------------------------------------------------------------------- scene building

_BOX, _CYL, _PLANE = 0, 1, 2


class _Scene:
    """Collects primitives (cuboids, vertical cylinders) with instance and material."""

    def __init__(self, rng, room_w, room_d, room_h, z_front):
        self.rng = rng
        self.W, self.D, self.Hr, self.zf = room_w, room_d, room_h, z_front
        self.xl, self.xr = -room_w / 2.0, room_w / 2.0
        # prim arrays: kind, p0 (3), p1 (3), instance, material
        self.kind: list[int] = []
        self.p0: list[tuple] = []
        self.p1: list[tuple] = []
        self.pinst: list[int] = []
        self.pmat: list[int] = []
        self.mats: list[_Mat] = []
        self.inst_raw: list[int] = [0]  # instance 0 unused
        self.floor_rects: list[tuple] = []  # (x0, z0, x1, z1) occupied floor
        self.wall_rects: dict[str, list[tuple]] = {"back": [], "left": [], "right": []}  # (s0, s1, y0, y1)

    # --- bookkeeping
    def instance(self, raw_name: str | None) -> int:
        self.inst_raw.append(0 if raw_name is None else _RAW[raw_name])
        return len(self.inst_raw) - 1

    def material(self, mat: _Mat) -> int:
        self.mats.append(mat)
        return len(self.mats) - 1

    def _add(self, kind, p0, p1, inst, mat):
        self.kind.append(kind)
        self.p0.append(tuple(p0))
        self.p1.append(tuple(p1))
        self.pinst.append(inst)
        self.pmat.append(mat)

    def box(self, fr, a0, a1, b0, b1, y0, y1, inst, mat):
        """Cuboid given in a frame's local coordinates (a along, b out from the wall, y up)."""
        xs, zs = [], []
        for a in (a0, a1):
            for b in (b0, b1):
                x, z = fr.to_world(a, b)
                xs.append(x)
                zs.append(z)
        self._add(_BOX, (min(xs), y0, min(zs)), (max(xs), y1, max(zs)), inst, mat)

    def cyl(self, fr, a, b, r, y0, y1, inst, mat):
        x, z = fr.to_world(a, b)
        self._add(_CYL, (x, y0, z), (r, y1, 0.0), inst, mat)

    # --- occupancy
    def floor_free(self, rect, margin=0.05) -> bool:
        x0, z0, x1, z1 = rect
        if x0 < self.xl - 1e-6 or x1 > self.xr + 1e-6 or z1 > self.D + 1e-6 or z0 < 0.9:
            return False
        for (u0, w0, u1, w1) in self.floor_rects:
            if x0 < u1 + margin and u0 < x1 + margin and z0 < w1 + margin and w0 < z1 + margin:
                return False
        return True

    def wall_free(self, wall, s0, s1, y0, y1, margin=0.05) -> bool:
        for (t0, t1, v0, v1) in self.wall_rects[wall]:
            if s0 < t1 + margin and t0 < s1 + margin and y0 < v1 + margin and v0 < y1 + margin:
                return False
        return True

    def wall_range(self, wall) -> tuple[float, float]:
        if wall == "back":
            return self.xl, self.xr
        return max(1.2, self.D * 0.35), self.D  # side walls: the part the camera can see


class _Frame:
    """Local frame on the floor: origin (ox, oz), unit 'a' (along) and 'b' (front) axes."""

    __slots__ = ("ox", "oz", "ax", "az", "bx", "bz")

    def __init__(self, ox, oz, a, b):
        self.ox, self.oz = ox, oz
        self.ax, self.az = a
        self.bx, self.bz = b

    def to_world(self, a, b):
        return self.ox + a * self.ax + b * self.bx, self.oz + a * self.az + b * self.bz

    def rect(self, a0, a1, b0, b1):
        pts = [self.to_world(a, b) for a in (a0, a1) for b in (b0, b1)]
        xs = [p[0] for p in pts]
        zs = [p[1] for p in pts]
        return min(xs), min(zs), max(xs), max(zs)


def _wall_frame(sc: _Scene, wall: str, s: float) -> _Frame:
    """Frame whose b axis points from the wall into the room; a runs along the wall; a=0 at s."""
    if wall == "back":
        return _Frame(s, sc.D, (1.0, 0.0), (0.0, -1.0))
    if wall == "left":
        return _Frame(sc.xl, s, (0.0, 1.0), (1.0, 0.0))
    return _Frame(sc.xr, s, (0.0, 1.0), (-1.0, 0.0))


_DIRS = [(0.0, -1.0), (0.0, 1.0), (1.0, 0.0), (-1.0, 0.0)]


def _free_frame(x, z, facing) -> _Frame:
    bx, bz = facing
    return _Frame(x, z, (-bz, bx), facing)


def _place_against_wall(sc: _Scene, width, depth, height, walls=("back", "left", "right"), tries=25,
                        s_range=None):
    """Find a free spot against one of ``walls``; returns (frame, wall) with a in [-w/2, w/2]."""
    rng = sc.rng
    for _ in range(tries):
        wall = walls[int(rng.integers(len(walls)))]
        lo, hi = sc.wall_range(wall) if s_range is None else s_range
        if hi - lo < width + 0.1:
            continue
        s = rng.uniform(lo + width / 2 + 0.05, hi - width / 2 - 0.05)
        fr = _wall_frame(sc, wall, s)
        rect = fr.rect(-width / 2, width / 2, 0.0, depth)
        if sc.floor_free(rect) and sc.wall_free(wall, s - width / 2, s + width / 2, 0.0, height):
            return fr, wall, s
    return None


def _claim(sc: _Scene, fr: _Frame, wall, s, a0, a1, b0, b1, height):
    sc.floor_rects.append(fr.rect(a0, a1, b0, b1))
    if wall is not None:
        sc.wall_rects[wall].append((s + a0, s + a1, 0.0, height))


# --- object builders (local frame: a along, b away from the wall / forward, y up)

def _table_lamp(sc, fr, a, b, y0, raw="table lamp"):
    rng = sc.rng
    inst = sc.instance(raw)
    base = sc.material(_pick(rng, [(0.5, _metal), (0.5, _plastic)]))
    shade = sc.material(_fabric(rng, light=True))
    h = rng.uniform(0.3, 0.45)
    r = rng.uniform(0.1, 0.16)
    sc.cyl(fr, a, b, 0.07, y0, y0 + 0.03, inst, base)
    sc.cyl(fr, a, b, 0.012, y0 + 0.03, y0 + h - 0.1, inst, base)
    sc.cyl(fr, a, b, r, y0 + h - 0.18, y0 + h, inst, shade)


def _floor_lamp(sc, fr, a, b):
    rng = sc.rng
    inst = sc.instance(rng.choice(["lamp", "floor lamp"]))
    base = sc.material(_pick(rng, [(0.6, _metal), (0.4, _plastic)]))
    shade = sc.material(_fabric(rng, light=True))
    h = rng.uniform(1.35, 1.7)
    r = rng.uniform(0.16, 0.25)
    sc.cyl(fr, a, b, 0.15, 0.0, 0.03, inst, base)
    sc.cyl(fr, a, b, 0.015, 0.03, h - 0.25, inst, base)
    sc.cyl(fr, a, b, r, h - 0.3, h, inst, shade)


def _small_prop(sc, fr, a, b, y0, labeled=True):
    """A vase / bottle / cup (otherprop) or an unlabeled knick-knack (raw 0)."""
    rng = sc.rng
    mat = sc.material(_pick(rng, [(0.5, _plastic), (0.3, _paint), (0.2, _metal)]))
    if not labeled:
        inst = sc.instance(None)
        w = rng.uniform(0.08, 0.2)
        sc.box(fr, a - w / 2, a + w / 2, b - w / 2, b + w / 2, y0, y0 + rng.uniform(0.05, 0.25), inst, mat)
        return
    kind = rng.choice(["vase", "bottle", "cup"])
    inst = sc.instance(kind)
    if kind == "vase":
        sc.cyl(fr, a, b, rng.uniform(0.05, 0.09), y0, y0 + rng.uniform(0.2, 0.35), inst, mat)
    elif kind == "bottle":
        r = rng.uniform(0.03, 0.045)
        h = rng.uniform(0.18, 0.28)
        sc.cyl(fr, a, b, r, y0, y0 + h, inst, mat)
        sc.cyl(fr, a, b, r * 0.4, y0 + h, y0 + h + 0.07, inst, mat)
    else:
        sc.cyl(fr, a, b, 0.04, y0, y0 + 0.1, inst, mat)


def _night_stand(sc, fr, a, w, d, h, lamp=True):
    rng = sc.rng
    inst = sc.instance("night stand")
    m = sc.material(_pick(rng, [(0.6, _wood), (0.4, _paint)]))
    handle = sc.material(_metal(rng))
    sc.box(fr, a - w / 2, a + w / 2, 0.02, d, 0.0, h, inst, m)
    sc.box(fr, a - 0.06, a + 0.06, d, d + 0.02, h * 0.7, h * 0.7 + 0.025, inst, handle)
    if lamp:
        _table_lamp(sc, fr, a, d * 0.5, h)
    elif rng.random() < 0.5:
        _small_prop(sc, fr, a + rng.uniform(-w / 4, w / 4), d * 0.5, h, labeled=rng.random() < 0.6)


def _bed(sc):
    rng = sc.rng
    w = rng.uniform(1.0, 1.8)
    L = rng.uniform(1.9, 2.15)
    ns_w = rng.uniform(0.4, 0.55)
    total = w + 2 * (ns_w + 0.05)
    spot = _place_against_wall(sc, total, L, 1.2)
    if spot is None:
        spot = _place_against_wall(sc, w, L, 1.2)
        total = w
        if spot is None:
            return False
    fr, wall, s = spot
    _claim(sc, fr, wall, s, -w / 2, w / 2, 0.0, L, 1.2)
    inst = sc.instance("bed")
    h = rng.uniform(0.4, 0.6)
    body = sc.material(_pick(rng, [(0.85, _fabric), (0.15, _wood)]))
    frame_m = sc.material(_pick(rng, [(0.6, _wood), (0.4, _fabric)]))
    sc.box(fr, -w / 2, w / 2, 0.0, 0.08, 0.0, h + rng.uniform(0.35, 0.75), inst, frame_m)  # headboard
    sc.box(fr, -w / 2, w / 2, 0.08, L, 0.0, h * 0.55, inst, frame_m)  # frame
    sc.box(fr, -w / 2 + 0.02, w / 2 - 0.02, 0.1, L - 0.02, h * 0.55, h, inst, body)  # mattress/cover
    if rng.random() < 0.5:  # footboard
        sc.box(fr, -w / 2, w / 2, L - 0.05, L, 0.0, h + rng.uniform(0.05, 0.25), inst, frame_m)
    n_p = 1 if w < 1.3 else int(rng.integers(1, 3))
    pm = sc.material(_fabric(rng))
    pw = (w - 0.2) / n_p
    for k in range(n_p):
        pi = sc.instance("pillow")
        a0 = -w / 2 + 0.1 + k * pw
        sc.box(fr, a0 + 0.03, a0 + pw - 0.03, 0.12, rng.uniform(0.45, 0.6), h, h + rng.uniform(0.1, 0.18), pi, pm)
    if total > w:  # night stands on both sides (or one), lamps on them
        nd = rng.uniform(0.35, 0.5)
        nh = rng.uniform(0.45, 0.65)
        for side in (-1, 1):
            if rng.random() < 0.8:
                a = side * (w / 2 + 0.05 + ns_w / 2)
                _claim(sc, fr, wall, s, a - ns_w / 2, a + ns_w / 2, 0.0, nd, nh)
                _night_stand(sc, fr, a, ns_w, nd, nh, lamp=rng.random() < 0.7)
    return True


def _chair(sc, fr, raw="chair"):
    """Chair at frame origin facing +b (seat centred on the origin)."""
    rng = sc.rng
    inst = sc.instance(raw)
    m = sc.material(_pick(rng, [(0.5, _wood), (0.25, _fabric), (0.25, _plastic)]))
    s = rng.uniform(0.4, 0.5)
    sh = rng.uniform(0.42, 0.48)
    bh = sh + rng.uniform(0.35, 0.5)
    lw = 0.04
    h = s / 2
    sc.box(fr, -h, h, -h, h, sh - 0.05, sh, inst, m)  # seat
    sc.box(fr, -h, h, -h, -h + 0.05, sh, bh, inst, m)  # back
    for (a, b) in ((-h, -h), (h - lw, -h), (-h, h - lw), (h - lw, h - lw)):
        sc.box(fr, a, a + lw, b, b + lw, 0.0, sh - 0.05, inst, m)


def _table_with_chairs(sc, coffee=False):
    rng = sc.rng
    if coffee:
        w, d, h = rng.uniform(0.8, 1.2), rng.uniform(0.5, 0.7), rng.uniform(0.38, 0.48)
        raw = "coffee table"
    else:
        w, d, h = rng.uniform(0.9, 1.8), rng.uniform(0.7, 1.0), rng.uniform(0.7, 0.78)
        raw = rng.choice(["table", "dining table"])
    cm = 0.75 if not coffee else 0.0  # room for chairs around
    if sc.xr - sc.xl < w + 2 * cm + 0.3 or sc.D - 2.1 < d + cm + 0.2:
        cm = 0.3
        if sc.xr - sc.xl < w + 2 * cm + 0.3 or sc.D - 2.1 < d + cm + 0.2:
            return False
    for _ in range(25):
        x = rng.uniform(sc.xl + w / 2 + cm + 0.1, sc.xr - w / 2 - cm - 0.1)
        z = rng.uniform(1.9 + d / 2, sc.D - d / 2 - cm - 0.2)
        fr = _Frame(x, z, (1.0, 0.0), (0.0, -1.0))
        if sc.floor_free(fr.rect(-w / 2 - cm, w / 2 + cm, -d / 2 - cm, d / 2 + cm)):
            break
    else:
        return False
    sc.floor_rects.append(fr.rect(-w / 2, w / 2, -d / 2, d / 2))
    _table_at(sc, fr, w, d, h, raw)
    if not coffee:
        # chairs around: the co-occurrence rule
        slots = [((0.0, -1.0), 1), ((0.0, 1.0), 1), ((1.0, 0.0), 0), ((-1.0, 0.0), 0)]
        n_ch = int(rng.integers(1, 5))
        order = rng.permutation(4)[:n_ch]
        for k in order:
            (dx, dz), along = slots[k]
            gap = rng.uniform(0.05, 0.25)
            half = (d / 2 if along else w / 2) + gap + 0.25
            off = rng.uniform(-0.25, 0.25) * (w if along else d) * 0.5
            cx = x + dx * half + (off if along else 0.0)
            cz = z + dz * half + (0.0 if along else off)
            cfr = _free_frame(cx, cz, (-dx, -dz))  # facing the table
            rect = cfr.rect(-0.27, 0.27, -0.27, 0.27)
            if sc.floor_free(rect, margin=0.02):
                sc.floor_rects.append(rect)
                _chair(sc, cfr, raw=rng.choice(["chair", "chair", "office chair"]))
    return fr, w, d, h


def _table_at(sc, fr, w, d, h, raw):
    rng = sc.rng
    inst = sc.instance(raw)
    m = sc.material(_pick(rng, [(0.7, _wood), (0.2, _paint), (0.1, _plastic)]))
    t = rng.uniform(0.03, 0.06)
    sc.box(fr, -w / 2, w / 2, -d / 2, d / 2, h - t, h, inst, m)
    lw = rng.uniform(0.04, 0.07)
    ins = 0.04
    for a in (-w / 2 + ins, w / 2 - ins - lw):
        for b in (-d / 2 + ins, d / 2 - ins - lw):
            sc.box(fr, a, a + lw, b, b + lw, 0.0, h - t, inst, m)
    # things on the table
    for _ in range(int(rng.integers(0, 3))):
        _small_prop(sc, fr, rng.uniform(-w / 2 + 0.1, w / 2 - 0.1), rng.uniform(-d / 2 + 0.1, d / 2 - 0.1), h,
                    labeled=rng.random() < 0.6)


def _sofa(sc):
    rng = sc.rng
    w, d = rng.uniform(1.5, 2.4), rng.uniform(0.8, 0.95)
    spot = _place_against_wall(sc, w, d, 0.9)
    if spot is None:
        return None
    fr, wall, s = spot
    _claim(sc, fr, wall, s, -w / 2, w / 2, 0.0, d, 0.9)
    inst = sc.instance(rng.choice(["sofa", "couch"]))
    m = sc.material(_pick(rng, [(0.8, _fabric), (0.2, _plastic)]))
    sh = rng.uniform(0.38, 0.45)
    bh = rng.uniform(0.75, 0.95)
    aw = rng.uniform(0.12, 0.22)
    ah = rng.uniform(0.55, 0.68)
    sc.box(fr, -w / 2 + aw, w / 2 - aw, 0.02, d, 0.0, sh, inst, m)
    sc.box(fr, -w / 2 + aw, w / 2 - aw, 0.02, 0.22, sh, bh, inst, m)
    for a0 in (-w / 2, w / 2 - aw):
        sc.box(fr, a0, a0 + aw, 0.02, d, 0.0, ah, inst, m)
    if rng.random() < 0.6:
        cm = sc.material(_fabric(rng))
        for _ in range(int(rng.integers(1, 3))):
            a = rng.uniform(-w / 2 + aw + 0.25, w / 2 - aw - 0.25)
            ci = sc.instance("cushion")
            sc.box(fr, a - 0.2, a + 0.2, 0.22, 0.34, sh, sh + 0.38, ci, cm)
    # a coffee table in front (co-occurrence)
    if rng.random() < 0.7:
        cw, cd, ch = min(w - 0.2, rng.uniform(0.8, 1.2)), rng.uniform(0.5, 0.65), rng.uniform(0.38, 0.48)
        b_c = d + rng.uniform(0.3, 0.5) + cd / 2
        cfr = _Frame(*fr.to_world(rng.uniform(-0.15, 0.15), b_c), (fr.ax, fr.az), (fr.bx, fr.bz))
        rect = cfr.rect(-cw / 2, cw / 2, -cd / 2, cd / 2)
        if sc.floor_free(rect):
            sc.floor_rects.append(rect)
            _table_at(sc, cfr, cw, cd, ch, "coffee table")
    # a floor lamp beside it
    if rng.random() < 0.6:
        side = rng.choice([-1, 1])
        a = side * (w / 2 + 0.3)
        rect = fr.rect(a - 0.2, a + 0.2, 0.1, 0.5)
        if sc.floor_free(rect):
            sc.floor_rects.append(rect)
            _floor_lamp(sc, fr, a, 0.3)
    return fr, wall


def _cabinet(sc, raw="cabinet", tall=None, walls=("back", "left", "right")):
    rng = sc.rng
    tall = rng.random() < 0.35 if tall is None else tall
    w = rng.uniform(0.6, 1.6)
    d = rng.uniform(0.4, 0.6)
    h = rng.uniform(1.6, 2.0) if tall else rng.uniform(0.5, 1.0)
    if raw == "dresser":
        h = rng.uniform(0.8, 1.2)
    if raw == "tv stand":
        h = rng.uniform(0.4, 0.6)
        w = rng.uniform(1.0, 1.8)
    spot = _place_against_wall(sc, w, d, h, walls=walls)
    if spot is None:
        return None
    fr, wall, s = spot
    _claim(sc, fr, wall, s, -w / 2, w / 2, 0.0, d, h)
    inst = sc.instance(raw)
    m = sc.material(_pick(rng, [(0.6, _wood), (0.4, _paint)]))
    hm = sc.material(_metal(rng))
    sc.box(fr, -w / 2, w / 2, 0.02, d, 0.0, h, inst, m)
    if raw == "dresser":  # rows of drawers with handles
        n = int(rng.integers(3, 5))
        for k in range(n):
            y = h * (k + 0.5) / n
            sc.box(fr, -w / 2 + 0.03, w / 2 - 0.03, d, d + 0.012, y - h / n * 0.45, y + h / n * 0.45, inst, m)
            sc.box(fr, -0.08, 0.08, d + 0.012, d + 0.03, y - 0.012, y + 0.012, inst, hm)
    else:  # doors with handles
        nd = 2 if w > 0.9 else 1
        dw = (w - 0.04) / nd
        for k in range(nd):
            a0 = -w / 2 + 0.02 + k * dw
            sc.box(fr, a0 + 0.01, a0 + dw - 0.01, d, d + 0.015, 0.05, h - 0.03, inst, m)
            ha = a0 + dw - 0.06 if k == 0 else a0 + 0.04
            hy = min(h - 0.15, 1.0)
            sc.box(fr, ha, ha + 0.02, d + 0.015, d + 0.035, hy - 0.08, hy + 0.08, inst, hm)
    return fr, wall, s, w, d, h


def _tv_on_stand(sc, walls=("back", "left", "right")):
    rng = sc.rng
    res = _cabinet(sc, raw=rng.choice(["tv stand", "cabinet"]), tall=False, walls=walls)
    if res is None:
        return False
    fr, wall, s, w, d, h = res
    inst = sc.instance("television")
    tw = min(w - 0.1, rng.uniform(0.8, 1.3))
    th = tw * rng.uniform(0.56, 0.62)
    frame_m = sc.material(_Mat(_PLASTIC, _hsv(0, 0, rng.uniform(0.03, 0.2))))
    screen = sc.material(_Mat(_SCREEN, _hsv(rng.uniform(0.5, 0.7), rng.uniform(0.1, 0.4), rng.uniform(0.05, 0.2))))
    b0 = d * 0.4
    sc.box(fr, -0.15, 0.15, b0 - 0.08, b0 + 0.08, h, h + 0.02, inst, frame_m)  # foot
    sc.box(fr, -0.03, 0.03, b0 - 0.02, b0 + 0.02, h + 0.02, h + 0.1, inst, frame_m)  # neck
    sc.box(fr, -tw / 2, tw / 2, b0 - 0.03, b0 + 0.03, h + 0.08, h + 0.08 + th, inst, frame_m)
    sc.box(fr, -tw / 2 + 0.02, tw / 2 - 0.02, b0 + 0.03, b0 + 0.035, h + 0.1, h + 0.06 + th, inst, screen)
    sc.wall_rects[wall].append((s - tw / 2, s + tw / 2, h, h + 0.1 + th))
    return True


def _bookshelf(sc):
    rng = sc.rng
    w, d, h = rng.uniform(0.7, 1.3), rng.uniform(0.28, 0.4), rng.uniform(1.4, 2.1)
    spot = _place_against_wall(sc, w, d, h)
    if spot is None:
        return False
    fr, wall, s = spot
    _claim(sc, fr, wall, s, -w / 2, w / 2, 0.0, d, h)
    inst = sc.instance("bookshelf")
    m = sc.material(_pick(rng, [(0.7, _wood), (0.3, _paint)]))
    t = 0.025
    sc.box(fr, -w / 2, w / 2, 0.0, 0.02, 0.0, h, inst, m)  # back panel
    sc.box(fr, -w / 2, -w / 2 + t, 0.0, d, 0.0, h, inst, m)
    sc.box(fr, w / 2 - t, w / 2, 0.0, d, 0.0, h, inst, m)
    n = int(rng.integers(3, 6))
    gap = (h - t) / n
    for k in range(n + 1):
        y = k * gap
        sc.box(fr, -w / 2 + t, w / 2 - t, 0.02, d, y, y + t, inst, m)
    bm = [sc.material(_pick(rng, [(0.6, _paint), (0.4, _plastic)])) for _ in range(4)]
    for k in range(n):
        if rng.random() < 0.2:
            continue
        y0 = k * gap + t
        bi = sc.instance("books")
        a = -w / 2 + t + rng.uniform(0.0, 0.15)
        end = w / 2 - t - rng.uniform(0.0, 0.3)
        while a < end - 0.03:
            bw = rng.uniform(0.02, 0.06) * (3 if rng.random() < 0.15 else 1)
            bh = min(gap - t - 0.02, rng.uniform(0.6, 0.95) * (gap - t))
            bd = rng.uniform(0.6, 0.95) * (d - 0.04)
            sc.box(fr, a, min(a + bw, end), 0.03, 0.03 + bd, y0, y0 + bh, bi, bm[int(rng.integers(4))])
            a += bw + (rng.uniform(0.05, 0.2) if rng.random() < 0.08 else 0.002)
    return True


def _wall_item(sc, kind):
    """Door, window (+curtains), picture/poster on a wall."""
    rng = sc.rng
    for _ in range(20):
        wall = rng.choice(["back", "left", "right"])
        lo, hi = sc.wall_range(wall)
        if kind == "door":
            w, y0, y1 = rng.uniform(0.8, 0.95), 0.0, rng.uniform(2.0, 2.1)
        elif kind == "window":
            w = rng.uniform(0.7, 1.6)
            y0 = rng.uniform(0.75, 1.05)
            y1 = min(sc.Hr - 0.15, y0 + rng.uniform(0.9, 1.4))
        else:
            w = rng.uniform(0.3, 1.0)
            hgt = rng.uniform(0.3, 0.8)
            yc = rng.uniform(1.3, 1.8)
            y0, y1 = yc - hgt / 2, min(sc.Hr - 0.1, yc + hgt / 2)
        if hi - lo < w + 0.2:
            continue
        s = rng.uniform(lo + w / 2 + 0.1, hi - w / 2 - 0.1)
        margin = 0.35 if kind == "window" else 0.05
        if not sc.wall_free(wall, s - w / 2 - margin, s + w / 2 + margin, y0, y1):
            continue
        fr = _wall_frame(sc, wall, s)
        if kind == "door" and not sc.floor_free(fr.rect(-w / 2, w / 2, 0.0, 0.9)):
            continue
        break
    else:
        return False
    sc.wall_rects[wall].append((s - w / 2 - (0.3 if kind == "window" else 0.0),
                                s + w / 2 + (0.3 if kind == "window" else 0.0), y0, y1))
    if kind == "door":
        inst = sc.instance("door")
        sc.floor_rects.append(fr.rect(-w / 2, w / 2, 0.0, 0.6))  # keep the swing area clear
        m = sc.material(_pick(rng, [(0.5, _wood), (0.5, _paint)]))
        fm = sc.material(_paint(rng, light=True)) if rng.random() < 0.5 else m
        sc.box(fr, -w / 2 - 0.06, w / 2 + 0.06, 0.0, 0.02, 0.0, y1 + 0.06, inst, fm)  # frame
        sc.box(fr, -w / 2, w / 2, 0.0, 0.04, 0.0, y1, inst, m)
        km = sc.material(_metal(rng))
        ka = w / 2 - 0.1 if rng.random() < 0.5 else -w / 2 + 0.08
        sc.box(fr, ka, ka + 0.03, 0.04, 0.1, 0.98, 1.02, inst, km)
    elif kind == "window":
        inst = sc.instance("window")
        fm = sc.material(_pick(rng, [(0.6, lambda r: _paint(r, light=True)), (0.4, _wood)]))
        sky = _hsv(rng.uniform(0.52, 0.62), rng.uniform(0.05, 0.45), rng.uniform(0.8, 1.0))
        gm = sc.material(_Mat(_GLASS, sky, emissive=True))
        sc.box(fr, -w / 2, w / 2, 0.0, 0.01, y0, y1, inst, gm)
        ft = 0.05
        sc.box(fr, -w / 2 - ft, w / 2 + ft, 0.0, 0.05, y0 - ft, y0, inst, fm)  # sill / frame
        sc.box(fr, -w / 2 - ft, w / 2 + ft, 0.0, 0.04, y1, y1 + ft, inst, fm)
        sc.box(fr, -w / 2 - ft, -w / 2, 0.0, 0.04, y0, y1, inst, fm)
        sc.box(fr, w / 2, w / 2 + ft, 0.0, 0.04, y0, y1, inst, fm)
        if w > 1.0:
            sc.box(fr, -0.02, 0.02, 0.0, 0.03, y0, y1, inst, fm)
        if rng.random() < 0.5:
            sc.box(fr, -w / 2, w / 2, 0.0, 0.03, (y0 + y1) / 2 - 0.02, (y0 + y1) / 2 + 0.02, inst, fm)
        if rng.random() < 0.5:  # curtains
            cm = sc.material(_fabric(rng))
            cy0 = 0.02 if rng.random() < 0.5 else y0 - 0.2
            for side in (-1, 1):
                ci = sc.instance("curtain")
                a0 = side * (w / 2 + 0.08)
                cw = rng.uniform(0.2, 0.4)
                sc.box(fr, min(a0, a0 + side * cw), max(a0, a0 + side * cw) * 1.0, 0.06, 0.14,
                       cy0, min(sc.Hr - 0.02, y1 + 0.15), ci, cm)
                if cy0 < 0.1:
                    sc.floor_rects.append(fr.rect(min(a0, a0 + side * cw), max(a0, a0 + side * cw), 0.0, 0.15))
    else:
        inst = sc.instance(rng.choice(["picture", "picture", "poster"]))
        fm = sc.material(_pick(rng, [(0.5, _wood), (0.3, _plastic), (0.2, _metal)]))
        cols = [_hsv(rng.random(), rng.uniform(0.3, 0.9), rng.uniform(0.2, 0.95)) for _ in range(2)]
        am = sc.material(_Mat(_ART, cols[0], cols[1], scale=rng.uniform(0.5, 3.0), orient=int(rng.integers(2))))
        sc.box(fr, -w / 2, w / 2, 0.0, 0.025, y0, y1, inst, fm)
        sc.box(fr, -w / 2 + 0.03, w / 2 - 0.03, 0.025, 0.03, y0 + 0.03, y1 - 0.03, inst, am)
    return True


def _floor_box(sc, labeled=True):
    rng = sc.rng
    w, d, h = rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.5), rng.uniform(0.15, 0.5)
    if not labeled:
        w, d, h = w * 0.6, d * 0.6, h * 0.6
    if rng.random() < 0.6:
        spot = _place_against_wall(sc, w, d, h, tries=8)
        if spot is None:
            return False
        fr, wall, s = spot
        b0 = 0.02
        _claim(sc, fr, wall, s, -w / 2, w / 2, 0.0, d + b0, h)
    else:
        for _ in range(8):
            x = rng.uniform(sc.xl + w, sc.xr - w)
            z = rng.uniform(1.2, sc.D - d)
            fr = _Frame(x, z, (1.0, 0.0), (0.0, -1.0))
            if sc.floor_free(fr.rect(-w / 2, w / 2, 0.0, d)):
                break
        else:
            return False
        b0 = 0.0
        sc.floor_rects.append(fr.rect(-w / 2, w / 2, 0.0, d))
    if labeled:
        inst = sc.instance(rng.choice(["box", "cardboard box"]))
        m = sc.material(_pick(rng, [(0.6, _brownish_paint), (0.2, _plastic), (0.2, _paint)]))
    else:
        inst = sc.instance(rng.choice([None, None, "bag"]))
        m = sc.material(_pick(rng, [(0.4, _fabric), (0.6, _plastic)]))
    sc.box(fr, -w / 2, w / 2, b0, b0 + d, 0.0, h, inst, m)
    if labeled and rng.random() < 0.3:  # stacked
        inst2 = sc.instance("box")
        w2, d2 = w * rng.uniform(0.6, 0.9), d * rng.uniform(0.6, 0.9)
        sc.box(fr, -w2 / 2, w2 / 2, b0, b0 + d2, h, h + rng.uniform(0.15, 0.35), inst2, m)
    return True


def _plant(sc):
    rng = sc.rng
    spot = _place_against_wall(sc, 0.45, 0.45, 1.0, tries=8)
    if spot is None:
        return False
    fr, wall, s = spot
    _claim(sc, fr, wall, s, -0.22, 0.22, 0.0, 0.45, 1.0)
    inst = sc.instance("plant")
    pot = sc.material(_pick(rng, [(0.5, _brownish_paint), (0.5, _plastic)]))
    leaf = sc.material(_Mat(_FABRIC, _hsv(rng.uniform(0.22, 0.38), rng.uniform(0.4, 0.8), rng.uniform(0.2, 0.55)),
                            scale=2.0))
    ph = rng.uniform(0.2, 0.4)
    sc.cyl(fr, 0.0, 0.22, rng.uniform(0.1, 0.16), 0.0, ph, inst, pot)
    for _ in range(3):
        sc.cyl(fr, rng.uniform(-0.06, 0.06), 0.22 + rng.uniform(-0.06, 0.06), rng.uniform(0.1, 0.2),
               ph + rng.uniform(0.0, 0.3), ph + rng.uniform(0.35, 0.7), inst, leaf)
    return True


def _person(sc):
    rng = sc.rng
    for _ in range(10):
        x = rng.uniform(sc.xl + 0.4, sc.xr - 0.4)
        z = rng.uniform(1.8, sc.D - 0.5)
        facing = _DIRS[int(rng.integers(4))] if rng.random() < 0.5 else (0.0, -1.0)
        fr = _free_frame(x, z, facing)
        rect = fr.rect(-0.3, 0.3, -0.2, 0.2)
        if sc.floor_free(rect):
            break
    else:
        return False
    sc.floor_rects.append(rect)
    inst = sc.instance("person")
    H = rng.uniform(1.55, 1.9)
    shirt = sc.material(_fabric(rng))
    pants = sc.material(_fabric(rng))
    skin = sc.material(_Mat(_PAINT, _hsv(rng.uniform(0.03, 0.1), rng.uniform(0.25, 0.6), rng.uniform(0.3, 0.9))))
    hair = sc.material(_Mat(_FABRIC, _hsv(rng.uniform(0.05, 0.1), rng.uniform(0.2, 0.6), rng.uniform(0.05, 0.5))))
    leg = 0.47 * H
    sh = 0.82 * H
    sc.box(fr, -0.16, -0.01, -0.08, 0.08, 0.0, leg, inst, pants)
    sc.box(fr, 0.01, 0.16, -0.08, 0.08, 0.0, leg, inst, pants)
    sc.box(fr, -0.2, 0.2, -0.11, 0.11, leg, sh, inst, shirt)
    sc.box(fr, -0.28, -0.2, -0.06, 0.06, sh - 0.6 * (sh - leg) - 0.15, sh, inst, shirt)
    sc.box(fr, 0.2, 0.28, -0.06, 0.06, sh - 0.6 * (sh - leg) - 0.15, sh, inst, shirt)
    sc.cyl(fr, 0.0, 0.0, 0.05, sh, sh + 0.05, inst, skin)
    sc.box(fr, -0.09, 0.09, -0.1, 0.1, sh + 0.05, H - 0.02, inst, skin)
    sc.box(fr, -0.095, 0.095, 0.0, 0.105, H - 0.1, H, inst, hair)
    return True


def _rug(sc):
    rng = sc.rng
    w, d = rng.uniform(1.2, 2.4), rng.uniform(1.0, 2.0)
    x = rng.uniform(sc.xl + w / 2 + 0.3, max(sc.xl + w / 2 + 0.31, sc.xr - w / 2 - 0.3))
    z = rng.uniform(1.5 + d / 2, max(1.51 + d / 2, sc.D - d / 2 - 0.3))
    if x + w / 2 > sc.xr - 0.05 or z + d / 2 > sc.D - 0.05:
        return False
    inst = sc.instance("rug")
    m = sc.material(_fabric(rng))
    fr = _Frame(x, z, (1.0, 0.0), (0.0, -1.0))
    sc.box(fr, -w / 2, w / 2, -d / 2, d / 2, 0.0, 0.012, inst, m)
    return True


def _build_scene(rng, aspect) -> tuple[_Scene, dict]:
    room_w = rng.uniform(3.0, 5.0)
    room_d = rng.uniform(3.0, 6.0)
    room_h = rng.uniform(2.4, 3.0)
    sc = _Scene(rng, room_w, room_d, room_h, z_front=-0.5)
    # room surfaces: one paint for the walls (sometimes an accent wall), floor, ceiling
    wall_mat = _pick(rng, [(0.8, lambda r: _paint(r, light=True)), (0.1, _paint), (0.1, lambda r: _fabric(r, True))])
    wm = sc.material(wall_mat)
    accent = sc.material(_paint(rng)) if rng.random() < 0.2 else wm
    floor_mat = _pick(rng, [(0.55, lambda r: _wood(r, plank=r.uniform(0.1, 0.25))),
                            (0.3, _fabric), (0.15, _paint)])
    fm = sc.material(floor_mat)
    cm = sc.material(_paint(rng, light=True))
    room = {
        "floor": (sc.instance("floor"), fm),
        "ceiling": (sc.instance("ceiling"), cm),
        "left": (sc.instance("wall"), wm),
        "right": (sc.instance("wall"), wm),
        "back": (sc.instance("wall"), accent),
        "front": (sc.instance("wall"), wm),
    }
    kind = rng.choice(["bedroom", "living", "dining", "office"], p=[0.3, 0.3, 0.2, 0.2])
    # wall items first (doors need floor space, windows wall space)
    if rng.random() < 0.55:
        _wall_item(sc, "door")
    for _ in range(int(rng.integers(0, 3))):
        _wall_item(sc, "window")
    if kind == "bedroom":
        _bed(sc)
        if rng.random() < 0.5:
            _cabinet(sc, raw="dresser")
        if rng.random() < 0.3:
            _cabinet(sc)
        if rng.random() < 0.3:
            _tv_on_stand(sc)
        if rng.random() < 0.3:
            _floor_box(sc)
    elif kind == "living":
        res = _sofa(sc)
        walls = ("back", "left", "right")
        if res is not None and res[1] != "back":
            walls = ("right",) if res[1] == "left" else ("left",)  # TV opposite the sofa
        if rng.random() < 0.75:
            _tv_on_stand(sc, walls=walls) or _tv_on_stand(sc)
        if rng.random() < 0.5:
            _bookshelf(sc)
        if rng.random() < 0.5:
            _plant(sc)
        if rng.random() < 0.3:
            _table_with_chairs(sc)
    elif kind == "dining":
        _table_with_chairs(sc)
        if rng.random() < 0.6:
            _cabinet(sc)
        if rng.random() < 0.3:
            _bookshelf(sc)
        if rng.random() < 0.4:
            _plant(sc)
        if rng.random() < 0.3:
            _floor_lamp_against_wall(sc)
    else:  # office / study
        for _ in range(int(rng.integers(1, 3))):
            _bookshelf(sc)
        _table_with_chairs(sc)
        if rng.random() < 0.5:
            _cabinet(sc, tall=True)
        if rng.random() < 0.4:
            _floor_lamp_against_wall(sc)
        if rng.random() < 0.3:
            _tv_on_stand(sc)
    for _ in range(int(rng.integers(0, 4))):
        _wall_item(sc, "picture")
    if rng.random() < 0.35:
        _rug(sc)
    for _ in range(int(rng.integers(0, 3))):
        _floor_box(sc, labeled=True)
    for _ in range(int(rng.integers(1, 5))):
        _floor_box(sc, labeled=False)
    if rng.random() < 0.3:
        _plant(sc)
    if rng.random() < 0.25:
        _person(sc)
    return sc, room


def _floor_lamp_against_wall(sc):
    spot = _place_against_wall(sc, 0.45, 0.45, 1.7, tries=8)
    if spot is None:
        return False
    fr, wall, s = spot
    _claim(sc, fr, wall, s, -0.22, 0.22, 0.0, 0.45, 1.7)
    _floor_lamp(sc, fr, 0.0, 0.25)
    return True


# --------------------------------------------------------------------------- rendering

def _rotation(yaw, pitch, roll) -> np.ndarray:
    """Camera-to-world rotation: camera x right, y up, z forward; pitch > 0 looks down."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])  # forward (0,0,1) -> (0, -sp, cp)
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return ry @ rx @ rz


def _check_size(size) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be a pair (height, width), got {size!r}") from None
    if h <= 0 or w <= 0 or h % 16 or w % 16:
        raise ValueError(f"size must be two positive multiples of 16 (height, width), got {tuple(size)!r}")
    return h, w


def render_scene(rng: np.random.Generator, size=(128, 160)) -> dict:
    """Render one random room.

    Returns ``{"rgb": H×W×3 uint8, "depth": H×W float32 metres (> 0 everywhere),
    "raw_label": H×W uint16 raw ids (0 = unlabeled)}`` plus two extras used for the
    VOC void band and for tests: ``"instance"`` (H×W int32, one id per object, the
    room surfaces included) and ``"room_depth"`` (H×W float32, the depth of the
    empty room from the same camera; ``depth <= room_depth`` everywhere, equality
    exactly where the room surface is visible).
    """
    H, W = _check_size(size)
    sc, room = _build_scene(rng, W / H)

    # camera
    hfov = math.radians(rng.uniform(57.0, 63.0))
    f = (W / 2.0) / math.tan(hfov / 2.0)
    cam_x = rng.uniform(-0.2, 0.2) * sc.W
    cam_y = rng.uniform(1.15, 1.7)
    origin = np.array([cam_x, cam_y, 0.0])
    R = _rotation(math.radians(rng.uniform(-15, 15)), math.radians(rng.uniform(5, 22)),
                  math.radians(rng.uniform(-2, 2)))
    cols = (np.arange(W) + 0.5 - W / 2.0) / f
    rows = -(np.arange(H) + 0.5 - H / 2.0) / f
    dcam = np.empty((H, W, 3))
    dcam[..., 0] = cols[None, :]
    dcam[..., 1] = rows[:, None]
    dcam[..., 2] = 1.0
    dirs = dcam @ R.T  # world directions; ray parameter t == optical-axis depth
    dirs[np.abs(dirs) < 1e-12] = 1e-12
    inv = 1.0 / dirs

    # room: exit of the inside of the room box
    lo = np.array([sc.xl, 0.0, sc.zf])
    hi = np.array([sc.xr, sc.Hr, sc.D])
    far = np.where(dirs > 0, hi, lo)
    texit = (far - origin) * inv
    axis = texit.argmin(-1)
    depth = np.take_along_axis(texit, axis[..., None], -1)[..., 0]
    positive = np.take_along_axis(dirs, axis[..., None], -1)[..., 0] > 0
    # room surfaces become prims of kind _PLANE with index = position in this list
    surf_names = [("left", "right"), ("floor", "ceiling"), ("front", "back")]
    normals = [((1, 0, 0), (-1, 0, 0)), ((0, 1, 0), (0, -1, 0)), ((0, 0, 1), (0, 0, -1))]
    n_room = 6
    code = axis * 2 + positive  # 0..5
    room_inst = np.array([room[surf_names[k // 2][k % 2]][0] for k in range(6)])
    room_mat = np.array([room[surf_names[k // 2][k % 2]][1] for k in range(6)])
    room_normal = np.array([normals[k // 2][k % 2] for k in range(6)], dtype=np.float64)
    prim = code.astype(np.int32)  # prim index: 0..5 room, 6.. objects
    room_depth = depth.copy()

    # objects: project bounding-box corners to restrict each primitive to its screen rectangle
    K = len(sc.kind)
    if K:
        kinds = np.array(sc.kind)
        p0 = np.array(sc.p0, dtype=np.float64)
        p1 = np.array(sc.p1, dtype=np.float64)
        blo = p0.copy()
        bhi = p1.copy()
        cylm = kinds == _CYL
        if cylm.any():
            c, r, y1 = p0[cylm], p1[cylm, 0], p1[cylm, 1]
            blo[cylm] = np.stack([c[:, 0] - r, c[:, 1], c[:, 2] - r], 1)
            bhi[cylm] = np.stack([c[:, 0] + r, y1, c[:, 2] + r], 1)
        sel = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1], [1, 0, 0], [1, 0, 1], [1, 1, 0], [1, 1, 1]])
        corners = np.where(sel[None, :, :] == 0, blo[:, None, :], bhi[:, None, :])  # K×8×3
        cc = (corners - origin) @ R  # camera coords
        zc = cc[..., 2]
        behind = (zc <= 0.05).any(1)
        zc_safe = np.maximum(zc, 0.05)
        u = cc[..., 0] / zc_safe * f + W / 2.0
        v = -cc[..., 1] / zc_safe * f + H / 2.0
        c0 = np.clip(np.floor(u.min(1)) - 1, 0, W).astype(int)
        c1 = np.clip(np.ceil(u.max(1)) + 1, 0, W).astype(int)
        r0 = np.clip(np.floor(v.min(1)) - 1, 0, H).astype(int)
        r1 = np.clip(np.ceil(v.max(1)) + 1, 0, H).astype(int)
        c0[behind], r0[behind], c1[behind], r1[behind] = 0, 0, W, H
        for k in range(K):
            a0, a1, b0, b1 = r0[k], r1[k], c0[k], c1[k]
            if a1 <= a0 or b1 <= b0:
                continue
            zb = depth[a0:a1, b0:b1]
            if kinds[k] == _BOX:
                iv = inv[a0:a1, b0:b1]
                t1 = (p0[k] - origin) * iv
                t2 = (p1[k] - origin) * iv
                tn = np.minimum(t1, t2).max(-1)
                tf = np.maximum(t1, t2).min(-1)
                hit = (tn <= tf) & (tn > 1e-6) & (tn < zb)
            else:
                d = dirs[a0:a1, b0:b1]
                cx, y0, cz = p0[k]
                r, y1 = p1[k, 0], p1[k, 1]
                ox, oy, oz = origin[0] - cx, origin[1], origin[2] - cz
                dx, dy, dz = d[..., 0], d[..., 1], d[..., 2]
                qa = dx * dx + dz * dz
                qb = dx * ox + dz * oz
                qc = ox * ox + oz * oz - r * r
                disc = qb * qb - qa * qc
                with np.errstate(invalid="ignore"):
                    ts = (-qb - np.sqrt(disc)) / qa
                ys = oy + ts * dy
                side = (disc >= 0) & (ts > 1e-6) & (ys >= y0) & (ys <= y1)
                tn = np.where(side, ts, np.inf)
                cap_y = y1 if oy > y1 else (y0 if oy < y0 else None)
                if cap_y is not None:
                    tcap = (cap_y - oy) / dy
                    xcap = ox + tcap * dx
                    zcap = oz + tcap * dz
                    cap = (tcap > 1e-6) & (xcap * xcap + zcap * zcap <= r * r)
                    tn = np.where(cap & (tcap < tn), tcap, tn)
                hit = tn < zb
            if hit.any():
                zb[hit] = tn[hit]
                prim[a0:a1, b0:b1][hit] = k + n_room

    # per-pixel attributes
    P = origin + dirs * depth[..., None]
    obj = prim >= n_room
    pk = np.maximum(prim - n_room, 0)
    normal = room_normal[np.minimum(prim, 5)]
    if K and obj.any():
        ko = pk[obj]
        Po = P[obj]
        kinds_o = kinds[ko]
        # boxes: the face whose plane the hit point lies on
        lo_o, hi_o = p0[ko], p1[ko]
        dlo = np.abs(Po - lo_o)
        dhi = np.abs(Po - hi_o)
        dmin = np.minimum(dlo, dhi)
        ax = dmin.argmin(1)
        sgn = np.where(np.take_along_axis(dhi, ax[:, None], 1)[:, 0] < np.take_along_axis(dlo, ax[:, None], 1)[:, 0],
                       1.0, -1.0)
        nb = np.zeros_like(Po)
        nb[np.arange(len(ko)), ax] = sgn
        # cylinders: caps or radial
        cm_ = kinds_o == _CYL
        if cm_.any():
            c = p0[ko[cm_]]
            Pc = Po[cm_]
            y0c, y1c = c[:, 1], p1[ko[cm_], 1]
            rad = Pc - c
            rad[:, 1] = 0.0
            rad /= np.maximum(np.linalg.norm(rad, axis=1, keepdims=True), 1e-9)
            top = np.abs(Pc[:, 1] - y1c) < 1e-5
            bot = np.abs(Pc[:, 1] - y0c) < 1e-5
            rad[top] = (0.0, 1.0, 0.0)
            rad[bot] = (0.0, -1.0, 0.0)
            nb[cm_] = rad
        normal[obj] = nb
    pinst = np.asarray(sc.pinst, dtype=np.int32)
    pmat = np.asarray(sc.pmat, dtype=np.int32)
    instance = np.where(obj, pinst[pk] if K else 0, room_inst[np.minimum(prim, 5)]).astype(np.int32)
    matid = np.where(obj, pmat[pk] if K else 0, room_mat[np.minimum(prim, 5)])
    inst_raw = np.asarray(sc.inst_raw, dtype=np.uint16)
    raw_label = inst_raw[instance]

    rgb = _shade(rng, sc, P, normal, dirs, depth, matid, prim)
    return {
        "rgb": rgb,
        "depth": depth.astype(np.float32),
        "raw_label": raw_label,
        "instance": instance,
        "room_depth": room_depth.astype(np.float32),
    }


def _shade(rng, sc: _Scene, P, normal, dirs, depth, matid, prim) -> np.ndarray:
    H, W = depth.shape
    mats = sc.mats
    fam = np.array([m.family for m in mats])[matid]
    c1 = np.array([m.c1 for m in mats])[matid]
    c2 = np.array([m.c2 for m in mats])[matid]
    scale = np.array([m.scale for m in mats])[matid]
    orient = np.array([m.orient for m in mats])[matid]
    plank = np.array([m.plank for m in mats])[matid]
    emis = np.array([m.emissive for m in mats])[matid]
    # texture offsets per primitive (so two parts of one object do not line up)
    offs = rng.integers(0, _T, size=(int(prim.max()) + 1, 2))[prim]

    # face-plane coordinates (metres)
    ax = np.abs(normal).argmax(-1)
    x, y, z = P[..., 0], P[..., 1], P[..., 2]
    u = np.where(ax == 0, z, x)
    v = np.where(ax == 1, z, y)
    side = (np.abs(normal[..., 1]) < 0.99) & (np.abs(normal[..., 0]) < 0.99) & (np.abs(normal[..., 2]) < 0.99)
    u = np.where(side, x + z, u)  # cylinder sides
    along = np.where(orient == 1, v, u)
    across = np.where(orient == 1, u, v)

    def tile(t, uu, vv):
        return t[(vv.astype(np.int64) + offs[..., 0]) & (_T - 1), (uu.astype(np.int64) + offs[..., 1]) & (_T - 1)]

    low = tile(_LOW, u * 40.0 * scale, v * 40.0 * scale)
    high = tile(_HIGH, u * 400.0, v * 400.0)
    col = c1.copy()
    # paint: faint blotches
    pat = 1.0 + 0.06 * (low - 0.5) + 0.03 * (high - 0.5)
    # fabric: fine weave noise + mottling
    fab = 1.0 + 0.22 * (high - 0.5) + 0.12 * (low - 0.5) * scale
    # wood: grain stripes bent by stretched noise, optional plank seams
    warp = tile(_LOW, along * 6.0, across * 50.0)
    g = 0.5 + 0.5 * np.sin(2 * np.pi * (across * scale + 0.8 * warp))
    g = g * g
    wood_mix = np.clip(g * 0.6 + 0.2 * (high - 0.5), 0.0, 1.0)[..., None]
    wood = c1 * (1 - wood_mix) + c2 * wood_mix
    with np.errstate(divide="ignore", invalid="ignore"):
        ph = np.where(plank > 0, across / np.where(plank > 0, plank, 1.0), 0.0)
        seam = (plank > 0) & (np.abs(ph - np.round(ph)) * plank < 0.006)
        plen = np.where(plank > 0, plank * 6.0, 1.0)
        stagger = np.floor(ph) * 0.37
        seam2 = (plank > 0) & (np.abs((along / plen + stagger) - np.round(along / plen + stagger)) * plen < 0.006)
    wood = wood * np.where(seam | seam2, 0.55, 1.0)[..., None]
    art_t = np.clip((tile(_LOW, u * 25.0 * scale, v * 25.0 * scale) - 0.35) * 4.0, 0, 1)[..., None]
    art = c1 * art_t + c2 * (1 - art_t)
    sky = c1 * (0.92 + 0.15 * (low[..., None] - 0.5))

    col = np.where((fam == _PAINT)[..., None], c1 * pat[..., None], col)
    col = np.where((fam == _FABRIC)[..., None], c1 * fab[..., None], col)
    col = np.where((fam == _WOOD)[..., None], wood, col)
    col = np.where((fam == _PLASTIC)[..., None], c1 * (1.0 + 0.03 * (high - 0.5))[..., None], col)
    col = np.where((fam == _METAL)[..., None], c1 * (0.9 + 0.2 * low)[..., None], col)
    col = np.where((fam == _ART)[..., None], art, col)
    col = np.where((fam == _GLASS)[..., None], sky, col)
    col = np.where((fam == _SCREEN)[..., None], c1 * (1.0 + 0.3 * (low - 0.5))[..., None], col)

    # lighting: one directional light, a headlight, ambient, and mild distance falloff
    L = np.array([rng.uniform(-0.6, 0.6), 1.0, rng.uniform(-0.9, -0.1)])
    L /= np.linalg.norm(L)
    vdir = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    diff = np.clip(normal @ L, 0.0, None)
    head = np.clip(-(normal * vdir).sum(-1), 0.0, None)
    amb = rng.uniform(0.3, 0.4)
    shade = amb + rng.uniform(0.4, 0.55) * diff + 0.3 * head
    spec = np.where((fam == _SCREEN) | (fam == _PLASTIC) | (fam == _METAL), 0.25 * head ** 20, 0.0)
    k = 0.02
    fall = (1 + k * 9.0) / (1 + k * depth * depth)
    # a little darkening in the room corners (cheap ambient occlusion on the room box)
    corner = np.ones_like(depth)
    for dist in (y, sc.Hr - y, x - sc.xl, sc.xr - x, sc.D - z):
        corner *= 1.0 - 0.18 * np.exp(-np.maximum(dist, 0.0) / 0.12)
    lit = col * (shade * fall * corner)[..., None] + spec[..., None]
    lit = np.where(emis[..., None], col, lit) * rng.uniform(0.85, 1.1)
    lit += rng.normal(0.0, 0.012, size=lit.shape)
    return (np.clip(lit, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------- VOC labels

def voc_label(raw_label: np.ndarray, instance: np.ndarray, band: int = 1) -> np.ndarray:
    """raw ids → VOC indices 0..20, 255 for unlabeled pixels and a void band of width
    ``2*band`` pixels along every boundary between two instances where one is a VOC object."""
    voc = _RAW_TO_VOC[raw_label]
    fg = (voc > 0) & (voc < 255)
    H, W = voc.shape
    edge = np.zeros((H, W), dtype=bool)
    for dy in range(-band, band + 1):
        for dx in range(-band, band + 1):
            if dy == 0 and dx == 0:
                continue
            ys = slice(max(dy, 0), H + min(dy, 0))
            yd = slice(max(-dy, 0), H + min(-dy, 0))
            xs = slice(max(dx, 0), W + min(dx, 0))
            xd = slice(max(-dx, 0), W + min(-dx, 0))
            # pixel at (yd, xd) compared with its neighbour at (ys, xs)
            diff = (instance[yd, xd] != instance[ys, xs]) & (fg[yd, xd] | fg[ys, xs])
            edge[yd, xd] |= diff
    out = voc.copy()
    out[edge] = 255
    return out


# --------------------------------------------------------------------------- writing


@dataclass
class SyntheticPaths:
    """Every path ``write_synthetic_dataset`` writes."""

    root: Path
    nyu_mat: Path
    splits: Path
    mapping: Path
    depth_only_dir: Path
    voc_root: Path  # root/"VOCdevkit"/"VOC2012"

    @property
    def marker(self) -> Path:
        return self.root / ".complete"


def synthetic_paths(out) -> SyntheticPaths:
    """The paths of a synthetic dataset rooted at ``out`` (nothing is written)."""
    root = Path(out)
    nyu = root / "nyu"
    return SyntheticPaths(
        root=root,
        nyu_mat=nyu / "nyu_depth_v2_labeled.mat",
        splits=nyu / "splits.mat",
        mapping=nyu / "classMapping40.mat",
        depth_only_dir=nyu / "depth_only",
        voc_root=root / "VOCdevkit" / "VOC2012",
    )


def dataset_exists(out) -> bool:
    """True when a complete synthetic dataset is at ``out`` (its marker, written last, and all files)."""
    p = synthetic_paths(out)
    try:
        meta = json.loads(p.marker.read_text())
        n_depth = int(meta["depth_only"])
        ids_ok = all((p.voc_root / "ImageSets" / "Segmentation" / f"{s}.txt").is_file()
                     for s in ("train", "val", "trainval"))
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if not (ids_ok and p.nyu_mat.is_file() and p.splits.is_file() and p.mapping.is_file()):
        return False
    if n_depth and not (p.depth_only_dir / _frame_name(n_depth - 1)).is_file():
        return False
    return True


def _frame_name(i: int) -> str:
    return f"frame_{i:05d}.h5"


def _voc_id(i: int) -> str:
    return f"synth_{i:06d}"


_STREAM_LABELED, _STREAM_DEPTH, _STREAM_SPLIT = 1, 2, 3


def _mat_header(text: str) -> bytes:
    """The 128-byte MATLAB header: 116 bytes text, 8 bytes subsystem offset, version, endian."""
    raw = text.encode("ascii")[:116].ljust(116, b" ")
    return raw + b" " * 8 + b"\x00\x02" + b"IM"


_V73_HEADER = _mat_header(
    "MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Thu Jan  1 00:00:00 2015 HDF5 schema 1.00 ."
)
_V5_HEADER_TEXT = "MATLAB 5.0 MAT-file, Platform: GLNXA64, Created on: Thu Jan  1 00:00:00 2015"


def _savemat_fixed(path: Path, mdict: dict) -> None:
    """scipy.io.savemat, then a fixed header text so the bytes do not depend on the clock."""
    import scipy.io

    scipy.io.savemat(str(path), mdict, format="5", do_compression=False, oned_as="row")
    with open(path, "r+b") as fh:
        fh.write(_V5_HEADER_TEXT.encode("ascii").ljust(116, b" "))


def _check_count(name, value, allow_zero=False):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'non-negative' if allow_zero else 'positive'}, got {value}")


def write_synthetic_dataset(out, *, labeled=300, depth_only=2000, size=(128, 160), seed=0, test_fraction=0.4,
                            progress=True) -> SyntheticPaths:
    """Render and write a synthetic dataset in the real NYUv2 / VOC formats under ``out``.

    ``labeled`` scenes go to the NYUv2 .mat (split into train/test by
    ``test_fraction``) and, identically, to the VOC tree; ``depth_only`` further
    scenes go to ``nyu/depth_only`` as unlabeled frames. Deterministic per ``seed``:
    scene i of each kind comes from its own random stream. A marker file is written
    last, so ``dataset_exists`` never mistakes an interrupted write for a complete one.
    """
    import h5py
    from PIL import Image

    from labelreg.data.palette import voc_palette

    H, W = _check_size(size)
    _check_count("labeled", labeled)
    _check_count("depth_only", depth_only, allow_zero=True)
    if labeled < 2:
        raise ValueError(f"labeled must be at least 2 (one train and one test scene), got {labeled}")
    _check_count("seed", seed, allow_zero=True)
    try:
        test_fraction = float(test_fraction)
    except (TypeError, ValueError):
        raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}") from None
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n_test = min(labeled - 1, max(1, int(round(labeled * test_fraction))))

    p = synthetic_paths(out)
    p.root.mkdir(parents=True, exist_ok=True)
    if p.marker.exists():
        p.marker.unlink()  # from here on the dataset is incomplete
    p.depth_only_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (p.voc_root / sub).mkdir(parents=True, exist_ok=True)
    # drop stale files of an earlier, larger dataset (only names this writer creates)
    for stale in p.depth_only_dir.glob("frame_*.h5"):
        stem = stale.stem[len("frame_"):]
        if not stem.isdigit() or int(stem) >= depth_only:
            stale.unlink()
    for folder, ext in (("JPEGImages", ".jpg"), ("SegmentationClass", ".png")):
        for stale in (p.voc_root / folder).glob(f"synth_*{ext}"):
            stem = stale.stem[len("synth_"):]
            if not stem.isdigit() or int(stem) >= labeled:
                stale.unlink()

    total = labeled + depth_only
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="synthetic scenes", unit="scene")

    # split
    srng = np.random.default_rng([seed, _STREAM_SPLIT])
    test_idx = np.sort(srng.permutation(labeled)[:n_test])
    is_test = np.zeros(labeled, dtype=bool)
    is_test[test_idx] = True
    train_ndx = (np.flatnonzero(~is_test) + 1).astype(np.uint16).reshape(-1, 1)
    test_ndx = (np.flatnonzero(is_test) + 1).astype(np.uint16).reshape(-1, 1)

    palette = voc_palette().reshape(-1).tolist()
    tmp_mat = p.nyu_mat.with_name(p.nyu_mat.name + ".partial")
    try:
        with h5py.File(tmp_mat, "w", userblock_size=512, libver="earliest") as fh:
            images = fh.create_dataset("images", shape=(labeled, 3, W, H), dtype=np.uint8,
                                       chunks=(1, 3, W, H), track_times=False)
            depths = fh.create_dataset("depths", shape=(labeled, W, H), dtype=np.float32,
                                       chunks=(1, W, H), track_times=False)
            labels = fh.create_dataset("labels", shape=(labeled, W, H), dtype=np.uint16,
                                       chunks=(1, W, H), track_times=False)
            for ds, cls in ((images, b"uint8"), (depths, b"single"), (labels, b"uint16")):
                ds.attrs.create("MATLAB_class", np.bytes_(cls))
            for i in range(labeled):
                sc = render_scene(np.random.default_rng([seed, _STREAM_LABELED, i]), (H, W))
                images[i] = sc["rgb"].transpose(2, 1, 0)
                depths[i] = sc["depth"].T
                labels[i] = sc["raw_label"].T
                name = _voc_id(i)
                Image.fromarray(sc["rgb"]).save(p.voc_root / "JPEGImages" / f"{name}.jpg", quality=90)
                lab = Image.fromarray(voc_label(sc["raw_label"], sc["instance"]), mode="P")
                lab.putpalette(palette)
                lab.save(p.voc_root / "SegmentationClass" / f"{name}.png")
                if bar is not None:
                    bar.update(1)
        with open(tmp_mat, "r+b") as fh:
            fh.write(_V73_HEADER)
        tmp_mat.replace(p.nyu_mat)

        _savemat_fixed(p.splits, {"trainNdxs": train_ndx, "testNdxs": test_ndx})
        class_name = np.empty((1, len(NYU40_CLASS_NAMES)), dtype=object)
        class_name[0, :] = NYU40_CLASS_NAMES
        all_names = np.empty((1, len(RAW_NAMES)), dtype=object)
        all_names[0, :] = RAW_NAMES
        _savemat_fixed(p.mapping, {"mapClass": RAW_TO_NYU40.reshape(1, -1).copy(), "className": class_name,
                                   "allClassName": all_names})

        seg = p.voc_root / "ImageSets" / "Segmentation"
        train_ids = [_voc_id(i) for i in range(labeled) if not is_test[i]]
        val_ids = [_voc_id(i) for i in range(labeled) if is_test[i]]
        (seg / "train.txt").write_text("".join(f"{n}\n" for n in train_ids))
        (seg / "val.txt").write_text("".join(f"{n}\n" for n in val_ids))
        (seg / "trainval.txt").write_text("".join(f"{_voc_id(i)}\n" for i in range(labeled)))

        for i in range(depth_only):
            sc = render_scene(np.random.default_rng([seed, _STREAM_DEPTH, i]), (H, W))
            with h5py.File(p.depth_only_dir / _frame_name(i), "w", libver="earliest") as fh:
                fh.create_dataset("rgb", data=np.ascontiguousarray(sc["rgb"].transpose(2, 0, 1)), track_times=False)
                fh.create_dataset("depth", data=sc["depth"], track_times=False)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    meta = {"labeled": labeled, "depth_only": depth_only, "size": [H, W], "seed": seed,
            "test_fraction": test_fraction, "n_train": int(labeled - n_test), "n_test": int(n_test),
            "format": "labelreg-synthetic-1"}
    p.marker.write_text(json.dumps(meta, indent=1) + "\n")
    return p
