"""``run_demo``: the selected stages in order, then ``metrics.json`` and ``report.md``.

Everything that can be refused is checked before the first write: the stage names, the overrides (each
stage's config is built first), the stages a selected stage needs, and the folders (``plan.check_folders``).
While it runs, the demo holds ``<out>/.lock``, so a second demo on the same folder is refused.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import labelreg
from labelreg.config import Config, ConfigError, load_config, to_dict
from labelreg.demo.plan import (DEMO_MARKER, NEEDS, Routing, check_folders, route_overrides, select_stages,
                                split_names)
from labelreg.demo.provenance import config_differences, fewer_epochs, git_commit, machine, reduced_reasons
from labelreg.demo.report import render_report, results_table, summary
from labelreg.demo.runs import (TrainedRun, can_reuse, ensure_trained, finish_stage, finished_mark, load_trained,
                                stage_config, start_stage)
from labelreg.demo.camvid import CAMVID
from labelreg.demo.stages import (SYNTHETIC, DemoSpec, autoencoder_results, depth_results, query_stage,
                                  segmenter_results)
from labelreg.engine import RunLock
from labelreg.runtime import resolve_device
from labelreg.storage import write_json, write_text_atomic
from labelreg.weak.demo import load_weak_demo, run_weak_demo, weak_demo_config

DEMOS = {"synthetic": SYNTHETIC, "camvid": CAMVID}  # --dataset → the demo it runs


@contextmanager
def holding(out: Path) -> Iterator[None]:
    """``<out>/.lock`` for the demo's lifetime: a second demo on the same folder is refused, naming the first."""
    lock = RunLock(out).acquire()
    try:
        yield
    finally:
        lock.release()


def stage_configs(spec: DemoSpec, out: Path, data_root: Path, per_stage: dict[str, list[str]]) -> dict[str, Config]:
    """Each selected stage's config with the overrides that reach it (``per_stage``), and the data stage's."""
    recipes = spec.recipes
    configs = {stage: stage_config(recipes[stage].config, stage, out, data_root,
                                   [*overrides, *recipes[stage].wiring(out, data_root)])
               for stage, overrides in per_stage.items() if stage in recipes}
    if "weak" in per_stage:
        configs["weak"] = weak_demo_config(out, data_root, per_stage["weak"])
    if "data" in per_stage:
        configs["data"] = load_config(recipes["ae"].config, [*per_stage["data"], f"data.root={data_root}"])
    return configs


def recipe_configs(spec: DemoSpec, out: Path, data_root: Path, stages: Sequence[str]) -> dict[str, Config]:
    """The same stages' configs without any override: the recipe a reduced run is compared with."""
    return {stage: cfg for stage, cfg in stage_configs(spec, out, data_root, {s: [] for s in stages}).items()
            if stage != "data"}


def demo_command(spec: DemoSpec, out: Path, data_root: Path, overrides: list[str], stages: Sequence[str] | None,
                 skip: Sequence[str] | None, fresh: bool) -> list[str]:
    """The ``labelreg demo`` command line that runs this demo again."""
    return (["labelreg", "demo", "--dataset", spec.name, "--out", str(out), "--data", str(data_root)]
            + [f"--stages={','.join(split_names(stages))}"] * bool(stages) + [f"--skip={','.join(split_names(skip))}"]
            * bool(skip) + ["--fresh"] * fresh + list(overrides))


def run_weak(cfg: Config, out: Path, data_root: Path, overrides: list[str], *, fresh: bool) -> tuple[dict, str]:
    """The weak stage, or its earlier output read back when it finished with the same config."""
    if not fresh and can_reuse(cfg, {}):
        print(f"weak: finished earlier with the same config in {cfg.run_dir}; read back (--fresh runs it again)")
        return load_weak_demo(cfg, out), "finished earlier, same config"
    record = start_stage(cfg, outputs=("demo.json",))
    weak = run_weak_demo(out, data_root, overrides)
    finish_stage(cfg.run_dir, record, weak["seconds"])
    return weak, "run"


def run_demo(out: Path | None = None, data_root: Path | None = None, overrides: list[str] | None = None, *,
             stages: Sequence[str] | None = None, skip: Sequence[str] | None = None, fresh: bool = False,
             dataset: str = "synthetic") -> dict:
    """Run the selected stages (``stages``: default all, minus ``skip``) of the ``dataset``'s demo (``DEMOS``) into
    ``out`` (default: the demo's, e.g. runs/demo); a stage that finished earlier there with the same config is read
    back unless ``fresh``. ``overrides``: ``[STAGE:]section.key=value`` (``plan.route_overrides``). Returns the
    summary that ``out/metrics.json`` holds."""
    if dataset not in DEMOS:
        raise ConfigError(f"--dataset {dataset!r}: choose one of {', '.join(DEMOS)}")
    spec = DEMOS[dataset]
    out, data_root, overrides = Path(out or spec.out), Path(data_root or spec.data_root), list(overrides or [])
    started = time.perf_counter()
    selected = select_stages(list(spec.stages), stages, skip)
    routing = route_overrides(overrides, selected)
    if spec.check is not None:
        spec.check(data_root)  # e.g. no CamVid folder there: one line, before any write
    configs = stage_configs(spec, out, data_root, routing.per_stage)  # a bad override fails here, before any write
    for stage in selected:
        for need in NEEDS.get(stage, ()):
            if need not in selected and finished_mark(out / need) is None:
                raise ConfigError(f"stage {stage} reads {need}'s output, and {out / need} holds no finished demo "
                                  f"stage; run {need} too (add it to --stages, or drop it from --skip)")
    check_folders(out, [stage for stage in selected if stage in spec.recipes or stage == "weak"])
    for note in routing.notes:
        print(f"override {note}")
    out.mkdir(parents=True, exist_ok=True)
    with holding(out):
        write_text_atomic(out / DEMO_MARKER, "written by labelreg demo: its report, metrics and figures, and the "
                                             "stage folders that hold .labelreg-demo-stage\n")
        record = _run_stages(spec, out, data_root, selected, overrides, routing, configs, fresh=fresh, started=started,
                             command=demo_command(spec, out, data_root, overrides, stages, skip, fresh))
    return record


def _run_stages(spec: DemoSpec, out: Path, data_root: Path, selected: list[str], overrides: list[str],
                routing: Routing, configs: dict[str, Config], *, fresh: bool, started: float,
                command: list[str]) -> dict:
    status, seconds, runs = {}, {}, {}
    if "data" in selected and spec.prepare is not None:
        spec.prepare(data_root, routing.per_stage["data"])
        status["data"], seconds["data"] = "run", time.perf_counter() - started
    for stage in spec.recipes:
        if stage in selected:
            needs = {need: finished_mark(out / need) for need in NEEDS.get(stage, ())}
            runs[stage], status[stage] = ensure_trained(configs[stage], spec.recipes[stage].trainer, needs=needs,
                                                        fresh=fresh)
        elif finished_mark(out / stage):
            runs[stage], status[stage] = load_trained(out / stage), "not run now: an earlier run's output"
        else:
            status[stage] = "not run"
            continue
        seconds[f"train_{stage}"] = runs[stage].seconds
    trained = {stage for stage, what in status.items() if what == "trained"}  # their figures are drawn again
    ae = autoencoder_results(runs["ae"], out, redraw="ae" in trained) if "ae" in runs else None
    seg = segmenter_results(runs.get("seg"), runs.get("seg_reg"), out, redraw=bool(trained & {"seg", "seg_reg"}),
                            figure_of=spec.segmenter_figure)
    depth = depth_results(runs.get("twopart"), runs.get("single"), out, redraw=bool(trained & {"twopart", "single"}))
    query_figure, query_records = None, None
    if "queries" in selected:
        query_started = time.perf_counter()
        query_figure, query_records = query_stage(runs["ae"].cfg, runs["seg_reg"].cfg, out, spec.prefer,
                                                  spec.query_split)
        status["queries"], seconds["queries"] = "run", time.perf_counter() - query_started
    weak = None
    if "weak" in selected:
        weak, status["weak"] = run_weak(configs["weak"], out, data_root, routing.per_stage["weak"], fresh=fresh)
    elif "weak" in spec.stages and finished_mark(out / "weak"):
        weak_cfg = load_config(out / "weak" / "config.yaml")
        weak, status["weak"] = load_weak_demo(weak_cfg, out), "not run now: an earlier run's output"
    if weak is not None:
        seconds["weak"] = weak["seconds"]
    seconds["total"] = time.perf_counter() - started

    reported = {**{stage: run.cfg for stage, run in runs.items()}, **({"weak": load_config(
        out / "weak" / "config.yaml")} if weak is not None else {})}
    recipes = recipe_configs(spec, out, data_root, list(reported))
    differences = {stage: config_differences(cfg, recipes[stage]) for stage, cfg in reported.items()}
    fewer = {stage: fewer_epochs(cfg, recipes[stage]) for stage, cfg in reported.items()}
    reasons = reduced_reasons(overrides, [s for s in spec.stages if s not in selected], differences, fewer)
    device = resolve_device(next(iter(reported.values())).train.device) if reported else resolve_device("auto")
    provenance = {"version": labelreg.__version__, "code": git_commit(), "machine": machine(device),
                  "command": command, "overrides": overrides, "override_notes": routing.notes, "status": status,
                  "reduced": reasons, "differences": differences,
                  "configs": {stage: to_dict(cfg) for stage, cfg in reported.items()}}
    record = summary(ae, seg, depth, query_records, weak, seconds, provenance)
    write_json(out / "metrics.json", record)
    table = results_table(ae, seg, depth, weak, seconds, split=spec.split_label)
    write_text_atomic(out / "report.md", render_report(
        intro=spec.intro.format(data_root=data_root), device=str(device), table=table, ae=ae, seg=seg, depth=depth,
        query_figure=query_figure, query_records=query_records, weak=weak, provenance=provenance))
    print()
    print(table)
    print(f"\nreport: {out / 'report.md'}")
    return record
