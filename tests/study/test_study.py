"""`labelreg study` end to end on the `tiny` protocol: outputs, two autoencoders, resume, failures, the lock."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from labelreg.cli import main
from labelreg.study import load_protocol, run_study

PROTOCOLS = Path(__file__).resolve().parents[2] / "configs" / "study"


def tiny_protocol_file(folder: Path, name: str = "tiny.yml", **replace: str) -> Path:
    """configs/study/tiny.yml with its data under ``folder`` and absolute config paths (and ``replace``d text)."""
    text = (PROTOCOLS / "tiny.yml").read_text().replace("root: data/study-tiny", f"root: {folder / 'data'}")
    text = text.replace("../demo/", f"{PROTOCOLS.parent / 'demo'}/")
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    path = folder / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """The tiny protocol, run once through the CLI (two autoencoders + 3 arms × 1 seed)."""
    folder = tmp_path_factory.mktemp("study")
    protocol = tiny_protocol_file(folder)
    assert main(["study", str(protocol), "--out", str(folder / "out")]) == 0
    return protocol, folder / "out"


def test_tiny_study_writes_report_results_and_plot(tiny_study):
    _, out = tiny_study
    results = json.loads((out / "results.json").read_text())
    assert [(run["arm"], run["seed"], run["status"]) for run in results["runs"]] == [
        ("baseline", 0, "ok"), ("decoder", 0, "ok"), ("dagger", 0, "ok")]
    for run in results["runs"]:
        assert run["seconds"] > 0 and "train.seed=%d" % run["seed"] in run["overrides"]
        assert 0 <= run["metrics"]["miou"] <= 1 and run["metrics"]["epoch"] == 1
    decoder = results["arms"]["decoder"]
    assert decoder["miou"]["n"] == 1 and "aux_miou" in decoder and decoder["vs_baseline"]["seeds"] == [0]
    assert "aux_miou" not in results["arms"]["baseline"]
    report = (out / "report.md").read_text()
    assert "reconstruction mIoU" in report and "FINAL epoch" in report and "| decoder |" in report
    assert (out / "study.png").stat().st_size > 1000


def test_each_autoencoder_is_trained_once_and_read_by_the_arms_that_name_it(tiny_study):
    _, out = tiny_study
    results = json.loads((out / "results.json").read_text())
    assert list(results["autoencoders"]) == ["ae128", "ae32"] and "autoencoder" not in results
    report = (out / "report.md").read_text()
    for name, variant, arm in [("ae128", "128", "decoder"), ("ae32", "32", "dagger")]:
        record = results["autoencoders"][name]
        assert record["status"] == "ok" and record["name"] == f"autoencoders/{name}"
        config = yaml.safe_load((out / "runs" / "autoencoders" / name / "config.yaml").read_text())
        assert config["model"]["variant"] == variant
        checkpoint = f"regularizer.autoencoder={out.resolve()}/runs/autoencoders/{name}/checkpoints/last.pt"
        assert all((checkpoint in run["overrides"]) == (run["arm"] == arm) for run in results["runs"])
        assert results["arms"][arm]["autoencoder"] == name
        # the report's row: name, its arms and its reconstruction mIoU (percent, one decimal)
        assert f"| {arm} | {100 * record['metrics']['miou']:.1f} |" in report.split(f"| {name} |")[1].splitlines()[0]
    assert sorted(path.name for path in (out / "logs").glob("autoencoders_*.log")) == [
        "autoencoders_ae128.log", "autoencoders_ae32.log"]  # one run each


def test_the_runs_diagnostics_reach_the_report(tiny_study):
    _, out = tiny_study
    results = json.loads((out / "results.json").read_text())
    assert "diagnostics" not in results["arms"]["baseline"]
    for arm in ("decoder", "dagger"):
        measured = json.loads((out / "runs" / arm / "seed0" / "diagnostics.json").read_text())
        diagnostics = results["arms"][arm]["diagnostics"]
        assert diagnostics["grad_ratio/step0"]["mean"] == pytest.approx(measured["grad_ratio"]["step0"])
        assert diagnostics["code_cosine"]["mean"] == pytest.approx(measured["code_cosine"])
        assert diagnostics["grad_cosine/end"]["n"] == 1
    assert "Mechanism diagnostics" in (out / "report.md").read_text()


def test_rerun_trains_nothing_and_a_failing_arm_fails_the_command(tiny_study, capsys):
    protocol_path, out = tiny_study
    again = run_study(load_protocol(protocol_path), out=out)
    assert again["trained"] == []
    assert all(run["status"] == "ok" for run in again["runs"])
    broken_arm = "  broken: {autoencoder: ae128, overrides: [regularizer.kind=bogus]}"
    broken = tiny_protocol_file(protocol_path.parent, "broken.yml",
                                **{"  baseline: []": f"  baseline: []\n{broken_arm}"})
    capsys.readouterr()
    assert main(["study", str(broken), "--out", str(out)]) == 2  # the report is written, the exit status says so
    assert "1 run(s) failed: broken/seed0" in capsys.readouterr().err
    summary = json.loads((out / "results.json").read_text())
    failed = [run for run in summary["runs"] if run["status"] != "ok"]
    assert [run["name"] for run in failed] == ["broken/seed0"]
    assert Path(failed[0]["log"]).is_file() and "regularizer.kind" in Path(failed[0]["log"]).read_text()
    assert "## Failed runs" in (out / "report.md").read_text()
    assert failed[0]["log"] in (out / "report.md").read_text()


def test_a_second_study_on_the_same_folder_is_refused_before_it_writes(tiny_study, capsys):
    """Another process holds <out>/.study.lock (as a running study does): refused, naming folder and pid."""
    protocol_path, out = tiny_study
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, json, os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.ftruncate(fd, 0)\n"
        "os.write(fd, json.dumps({'pid': os.getpid(), 'host': 'here'}).encode())\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n"), str(out / ".study.lock")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        before = {path: path.stat().st_mtime_ns for path in out.iterdir() if path.is_file()}
        capsys.readouterr()
        assert main(["study", str(protocol_path), "--out", str(out)]) == 2
        error = capsys.readouterr().err
        assert f"{out} is in use by another study: pid {holder.pid}" in error and len(error.splitlines()) == 1
        assert {path: path.stat().st_mtime_ns for path in out.iterdir() if path.is_file()} == before
    finally:
        holder.stdin.close()
        holder.wait()


# ~26 s on the 2-core CPU: a further training run, the same tiny run the fixture already trains, only launched
# through submitit's local executor (the optional launcher); `make test-all` runs it.
@pytest.mark.slow
def test_submitit_local_executor(tiny_study):
    pytest.importorskip("submitit")
    protocol_path, out = tiny_study
    protocol = load_protocol(protocol_path)
    protocol.arms = {"baseline": []}
    protocol.seeds = [7]
    summary = run_study(protocol, out=out, launcher="submitit", submitit_cluster="local",
                        submitit_parameters={"timeout_min": 5})
    assert summary["trained"] == ["baseline/seed7"]
    assert summary["runs"][0]["status"] == "ok", summary["runs"][0]
    assert any((out / "submitit").iterdir())


def test_stopping_a_submitit_study_cancels_its_unfinished_jobs(monkeypatch, tmp_path):
    """Ctrl-C of `labelreg study --launcher submitit` cancels the jobs still queued or running (scancel on Slurm),
    not those done. A stand-in for submitit records what is asked of it."""
    import types

    from labelreg.study.runner import Launcher

    class Job:
        def __init__(self, finished: bool) -> None:
            self.finished, self.cancelled = finished, []

        def done(self) -> bool:
            return self.finished

        def cancel(self, check: bool = True) -> None:
            self.cancelled.append(check)

    class AutoExecutor:
        def __init__(self, folder: str, cluster: str | None = None) -> None:
            self.states = iter([True, False, False])  # the first job has finished

        def update_parameters(self, **parameters) -> None:
            pass

        def submit(self, function, spec):
            return Job(next(self.states))

    monkeypatch.setitem(sys.modules, "submitit", types.SimpleNamespace(AutoExecutor=AutoExecutor))
    launcher = Launcher(jobs=2, launcher="submitit", folder=tmp_path)
    jobs = [launcher.start({"name": f"run{i}"}) for i in range(3)]
    launcher.stop()
    assert [job.cancelled for job in jobs] == [[], [False], [False]]
