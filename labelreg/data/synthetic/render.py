"""Rendering: camera, ray casting against the room box and the primitives, shading, VOC labels with a void band."""
from __future__ import annotations

import math

import numpy as np

from labelreg.data.synthetic.classes import RAW_ID_TO_VOC
from labelreg.data.synthetic.layout import build_scene
from labelreg.data.synthetic.materials import (ART, FABRIC, GLASS, HIGH, LOW, METAL, PAINT, PLASTIC,
                                               SCREEN, TILE, WOOD)
from labelreg.data.synthetic.scene import BOX, CYL, Scene

def _rotation(yaw, pitch, roll) -> np.ndarray:
    """Camera-to-world rotation: camera x right, y up, z forward; pitch > 0 looks down."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])  # forward (0,0,1) -> (0, -sp, cp)
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return ry @ rx @ rz


def check_size(size) -> tuple[int, int]:
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
    H, W = check_size(size)
    sc, room = build_scene(rng, W / H)

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
        cylm = kinds == CYL
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
            if kinds[k] == BOX:
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
        cm_ = kinds_o == CYL
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


def _shade(rng, sc: Scene, P, normal, dirs, depth, matid, prim) -> np.ndarray:
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
    offs = rng.integers(0, TILE, size=(int(prim.max()) + 1, 2))[prim]

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
        return t[(vv.astype(np.int64) + offs[..., 0]) & (TILE - 1), (uu.astype(np.int64) + offs[..., 1]) & (TILE - 1)]

    low = tile(LOW, u * 40.0 * scale, v * 40.0 * scale)
    high = tile(HIGH, u * 400.0, v * 400.0)
    col = c1.copy()
    # paint: faint blotches
    pat = 1.0 + 0.06 * (low - 0.5) + 0.03 * (high - 0.5)
    # fabric: fine weave noise + mottling
    fab = 1.0 + 0.22 * (high - 0.5) + 0.12 * (low - 0.5) * scale
    # wood: grain stripes bent by stretched noise, optional plank seams
    warp = tile(LOW, along * 6.0, across * 50.0)
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
    art_t = np.clip((tile(LOW, u * 25.0 * scale, v * 25.0 * scale) - 0.35) * 4.0, 0, 1)[..., None]
    art = c1 * art_t + c2 * (1 - art_t)
    sky = c1 * (0.92 + 0.15 * (low[..., None] - 0.5))

    col = np.where((fam == PAINT)[..., None], c1 * pat[..., None], col)
    col = np.where((fam == FABRIC)[..., None], c1 * fab[..., None], col)
    col = np.where((fam == WOOD)[..., None], wood, col)
    col = np.where((fam == PLASTIC)[..., None], c1 * (1.0 + 0.03 * (high - 0.5))[..., None], col)
    col = np.where((fam == METAL)[..., None], c1 * (0.9 + 0.2 * low)[..., None], col)
    col = np.where((fam == ART)[..., None], art, col)
    col = np.where((fam == GLASS)[..., None], sky, col)
    col = np.where((fam == SCREEN)[..., None], c1 * (1.0 + 0.3 * (low - 0.5))[..., None], col)

    # lighting: one directional light, a headlight, ambient, and mild distance falloff
    L = np.array([rng.uniform(-0.6, 0.6), 1.0, rng.uniform(-0.9, -0.1)])
    L /= np.linalg.norm(L)
    vdir = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    diff = np.clip(normal @ L, 0.0, None)
    head = np.clip(-(normal * vdir).sum(-1), 0.0, None)
    amb = rng.uniform(0.3, 0.4)
    shade = amb + rng.uniform(0.4, 0.55) * diff + 0.3 * head
    spec = np.where((fam == SCREEN) | (fam == PLASTIC) | (fam == METAL), 0.25 * head ** 20, 0.0)
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


def voc_label(raw_label: np.ndarray, instance: np.ndarray, band: int = 1) -> np.ndarray:
    """raw ids → VOC indices 0..20, 255 for unlabeled pixels and a void band of width
    ``2*band`` pixels along every boundary between two instances where one is a VOC object."""
    voc = RAW_ID_TO_VOC[raw_label]
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
