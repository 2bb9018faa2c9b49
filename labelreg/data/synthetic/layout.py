"""Room layout: the room box and its surfaces, and which objects each kind of room gets."""
from __future__ import annotations

from labelreg.data.synthetic.furniture import (_bed, _bookshelf, _cabinet, _floor_lamp_against_wall, _sofa,
                                               _table_with_chairs, _tv_on_stand)
from labelreg.data.synthetic.materials import _fabric, _paint, _pick, _wood
from labelreg.data.synthetic.props import _floor_box, _person, _plant, _rug, _wall_item
from labelreg.data.synthetic.scene import _Scene

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
