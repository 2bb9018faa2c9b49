"""Furniture builders: beds, night stands, lamps, tables and chairs, sofas, cabinets, TVs, bookshelves, small props."""
from __future__ import annotations

from labelreg.data.synthetic.materials import (PLASTIC, SCREEN, Mat, fabric, hsv, metal, paint, pick,
                                               plastic, wood)
from labelreg.data.synthetic.scene import claim, Frame, free_frame, place_against_wall

# --- object builders (local frame: a along, b away from the wall / forward, y up)

def _table_lamp(sc, fr, a, b, y0, raw="table lamp"):
    rng = sc.rng
    inst = sc.instance(raw)
    base = sc.material(pick(rng, [(0.5, metal), (0.5, plastic)]))
    shade = sc.material(fabric(rng, light=True))
    h = rng.uniform(0.3, 0.45)
    r = rng.uniform(0.1, 0.16)
    sc.cyl(fr, a, b, 0.07, y0, y0 + 0.03, inst, base)
    sc.cyl(fr, a, b, 0.012, y0 + 0.03, y0 + h - 0.1, inst, base)
    sc.cyl(fr, a, b, r, y0 + h - 0.18, y0 + h, inst, shade)


def _floor_lamp(sc, fr, a, b):
    rng = sc.rng
    inst = sc.instance(rng.choice(["lamp", "floor lamp"]))
    base = sc.material(pick(rng, [(0.6, metal), (0.4, plastic)]))
    shade = sc.material(fabric(rng, light=True))
    h = rng.uniform(1.35, 1.7)
    r = rng.uniform(0.16, 0.25)
    sc.cyl(fr, a, b, 0.15, 0.0, 0.03, inst, base)
    sc.cyl(fr, a, b, 0.015, 0.03, h - 0.25, inst, base)
    sc.cyl(fr, a, b, r, h - 0.3, h, inst, shade)


def _small_prop(sc, fr, a, b, y0, labeled=True):
    """A vase / bottle / cup (otherprop) or an unlabeled knick-knack (raw 0)."""
    rng = sc.rng
    mat = sc.material(pick(rng, [(0.5, plastic), (0.3, paint), (0.2, metal)]))
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
    m = sc.material(pick(rng, [(0.6, wood), (0.4, paint)]))
    handle = sc.material(metal(rng))
    sc.box(fr, a - w / 2, a + w / 2, 0.02, d, 0.0, h, inst, m)
    sc.box(fr, a - 0.06, a + 0.06, d, d + 0.02, h * 0.7, h * 0.7 + 0.025, inst, handle)
    if lamp:
        _table_lamp(sc, fr, a, d * 0.5, h)
    elif rng.random() < 0.5:
        _small_prop(sc, fr, a + rng.uniform(-w / 4, w / 4), d * 0.5, h, labeled=rng.random() < 0.6)


def bed(sc):
    rng = sc.rng
    w = rng.uniform(1.0, 1.8)
    L = rng.uniform(1.9, 2.15)
    ns_w = rng.uniform(0.4, 0.55)
    total = w + 2 * (ns_w + 0.05)
    spot = place_against_wall(sc, total, L, 1.2)
    if spot is None:
        spot = place_against_wall(sc, w, L, 1.2)
        total = w
        if spot is None:
            return False
    fr, wall, s = spot
    claim(sc, fr, wall, s, -w / 2, w / 2, 0.0, L, 1.2)
    inst = sc.instance("bed")
    h = rng.uniform(0.4, 0.6)
    body = sc.material(pick(rng, [(0.85, fabric), (0.15, wood)]))
    frame_m = sc.material(pick(rng, [(0.6, wood), (0.4, fabric)]))
    sc.box(fr, -w / 2, w / 2, 0.0, 0.08, 0.0, h + rng.uniform(0.35, 0.75), inst, frame_m)  # headboard
    sc.box(fr, -w / 2, w / 2, 0.08, L, 0.0, h * 0.55, inst, frame_m)  # frame
    sc.box(fr, -w / 2 + 0.02, w / 2 - 0.02, 0.1, L - 0.02, h * 0.55, h, inst, body)  # mattress/cover
    if rng.random() < 0.5:  # footboard
        sc.box(fr, -w / 2, w / 2, L - 0.05, L, 0.0, h + rng.uniform(0.05, 0.25), inst, frame_m)
    n_p = 1 if w < 1.3 else int(rng.integers(1, 3))
    pm = sc.material(fabric(rng))
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
                claim(sc, fr, wall, s, a - ns_w / 2, a + ns_w / 2, 0.0, nd, nh)
                _night_stand(sc, fr, a, ns_w, nd, nh, lamp=rng.random() < 0.7)
    return True


def _chair(sc, fr, raw="chair"):
    """Chair at frame origin facing +b (seat centred on the origin)."""
    rng = sc.rng
    inst = sc.instance(raw)
    m = sc.material(pick(rng, [(0.5, wood), (0.25, fabric), (0.25, plastic)]))
    s = rng.uniform(0.4, 0.5)
    sh = rng.uniform(0.42, 0.48)
    bh = sh + rng.uniform(0.35, 0.5)
    lw = 0.04
    h = s / 2
    sc.box(fr, -h, h, -h, h, sh - 0.05, sh, inst, m)  # seat
    sc.box(fr, -h, h, -h, -h + 0.05, sh, bh, inst, m)  # back
    for (a, b) in ((-h, -h), (h - lw, -h), (-h, h - lw), (h - lw, h - lw)):
        sc.box(fr, a, a + lw, b, b + lw, 0.0, sh - 0.05, inst, m)


def table_with_chairs(sc, coffee=False):
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
        fr = Frame(x, z, (1.0, 0.0), (0.0, -1.0))
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
            cfr = free_frame(cx, cz, (-dx, -dz))  # facing the table
            rect = cfr.rect(-0.27, 0.27, -0.27, 0.27)
            if sc.floor_free(rect, margin=0.02):
                sc.floor_rects.append(rect)
                _chair(sc, cfr, raw=rng.choice(["chair", "chair", "office chair"]))
    return fr, w, d, h


def _table_at(sc, fr, w, d, h, raw):
    rng = sc.rng
    inst = sc.instance(raw)
    m = sc.material(pick(rng, [(0.7, wood), (0.2, paint), (0.1, plastic)]))
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


def sofa(sc):
    rng = sc.rng
    w, d = rng.uniform(1.5, 2.4), rng.uniform(0.8, 0.95)
    spot = place_against_wall(sc, w, d, 0.9)
    if spot is None:
        return None
    fr, wall, s = spot
    claim(sc, fr, wall, s, -w / 2, w / 2, 0.0, d, 0.9)
    inst = sc.instance(rng.choice(["sofa", "couch"]))
    m = sc.material(pick(rng, [(0.8, fabric), (0.2, plastic)]))
    sh = rng.uniform(0.38, 0.45)
    bh = rng.uniform(0.75, 0.95)
    aw = rng.uniform(0.12, 0.22)
    ah = rng.uniform(0.55, 0.68)
    sc.box(fr, -w / 2 + aw, w / 2 - aw, 0.02, d, 0.0, sh, inst, m)
    sc.box(fr, -w / 2 + aw, w / 2 - aw, 0.02, 0.22, sh, bh, inst, m)
    for a0 in (-w / 2, w / 2 - aw):
        sc.box(fr, a0, a0 + aw, 0.02, d, 0.0, ah, inst, m)
    if rng.random() < 0.6:
        cm = sc.material(fabric(rng))
        for _ in range(int(rng.integers(1, 3))):
            a = rng.uniform(-w / 2 + aw + 0.25, w / 2 - aw - 0.25)
            ci = sc.instance("cushion")
            sc.box(fr, a - 0.2, a + 0.2, 0.22, 0.34, sh, sh + 0.38, ci, cm)
    # a coffee table in front (co-occurrence)
    if rng.random() < 0.7:
        cw, cd, ch = min(w - 0.2, rng.uniform(0.8, 1.2)), rng.uniform(0.5, 0.65), rng.uniform(0.38, 0.48)
        b_c = d + rng.uniform(0.3, 0.5) + cd / 2
        cfr = Frame(*fr.to_world(rng.uniform(-0.15, 0.15), b_c), (fr.ax, fr.az), (fr.bx, fr.bz))
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


def cabinet(sc, raw="cabinet", tall=None, walls=("back", "left", "right")):
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
    spot = place_against_wall(sc, w, d, h, walls=walls)
    if spot is None:
        return None
    fr, wall, s = spot
    claim(sc, fr, wall, s, -w / 2, w / 2, 0.0, d, h)
    inst = sc.instance(raw)
    m = sc.material(pick(rng, [(0.6, wood), (0.4, paint)]))
    hm = sc.material(metal(rng))
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


def tv_on_stand(sc, walls=("back", "left", "right")):
    rng = sc.rng
    res = cabinet(sc, raw=rng.choice(["tv stand", "cabinet"]), tall=False, walls=walls)
    if res is None:
        return False
    fr, wall, s, w, d, h = res
    inst = sc.instance("television")
    tw = min(w - 0.1, rng.uniform(0.8, 1.3))
    th = tw * rng.uniform(0.56, 0.62)
    frame_m = sc.material(Mat(PLASTIC, hsv(0, 0, rng.uniform(0.03, 0.2))))
    screen = sc.material(Mat(SCREEN, hsv(rng.uniform(0.5, 0.7), rng.uniform(0.1, 0.4), rng.uniform(0.05, 0.2))))
    b0 = d * 0.4
    sc.box(fr, -0.15, 0.15, b0 - 0.08, b0 + 0.08, h, h + 0.02, inst, frame_m)  # foot
    sc.box(fr, -0.03, 0.03, b0 - 0.02, b0 + 0.02, h + 0.02, h + 0.1, inst, frame_m)  # neck
    sc.box(fr, -tw / 2, tw / 2, b0 - 0.03, b0 + 0.03, h + 0.08, h + 0.08 + th, inst, frame_m)
    sc.box(fr, -tw / 2 + 0.02, tw / 2 - 0.02, b0 + 0.03, b0 + 0.035, h + 0.1, h + 0.06 + th, inst, screen)
    sc.wall_rects[wall].append((s - tw / 2, s + tw / 2, h, h + 0.1 + th))
    return True


def bookshelf(sc):
    rng = sc.rng
    w, d, h = rng.uniform(0.7, 1.3), rng.uniform(0.28, 0.4), rng.uniform(1.4, 2.1)
    spot = place_against_wall(sc, w, d, h)
    if spot is None:
        return False
    fr, wall, s = spot
    claim(sc, fr, wall, s, -w / 2, w / 2, 0.0, d, h)
    inst = sc.instance("bookshelf")
    m = sc.material(pick(rng, [(0.7, wood), (0.3, paint)]))
    t = 0.025
    sc.box(fr, -w / 2, w / 2, 0.0, 0.02, 0.0, h, inst, m)  # back panel
    sc.box(fr, -w / 2, -w / 2 + t, 0.0, d, 0.0, h, inst, m)
    sc.box(fr, w / 2 - t, w / 2, 0.0, d, 0.0, h, inst, m)
    n = int(rng.integers(3, 6))
    gap = (h - t) / n
    for k in range(n + 1):
        y = k * gap
        sc.box(fr, -w / 2 + t, w / 2 - t, 0.02, d, y, y + t, inst, m)
    bm = [sc.material(pick(rng, [(0.6, paint), (0.4, plastic)])) for _ in range(4)]
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


def floor_lamp_against_wall(sc):
    spot = place_against_wall(sc, 0.45, 0.45, 1.7, tries=8)
    if spot is None:
        return False
    fr, wall, s = spot
    claim(sc, fr, wall, s, -0.22, 0.22, 0.0, 0.45, 1.7)
    _floor_lamp(sc, fr, 0.0, 0.25)
    return True
