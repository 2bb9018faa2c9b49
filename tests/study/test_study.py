"""`labelreg study` end to end on the `tiny` protocol: outputs, resume, a failing arm, submitit."""
import json
from pathlib import Path

import pytest

from labelreg.cli import main
from labelreg.study import load_protocol, run_study

PROTOCOLS = Path(__file__).resolve().parents[2] / "configs" / "study"


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """The tiny protocol, run once through the CLI (autoencoder + 2 arms × 2 seeds)."""
    folder = tmp_path_factory.mktemp("study")
    protocol = folder / "tiny.yml"
    text = (PROTOCOLS / "tiny.yml").read_text().replace("root: data/study-tiny", f"root: {folder / 'data'}")
    protocol.write_text(text.replace("../demo/", f"{PROTOCOLS.parent / 'demo'}/"))
    main(["study", str(protocol), "--out", str(folder / "out")])
    return protocol, folder / "out"


def test_tiny_study_writes_report_results_and_plot(tiny_study):
    _, out = tiny_study
    results = json.loads((out / "results.json").read_text())
    assert [(run["arm"], run["seed"], run["status"]) for run in results["runs"]] == [
        ("baseline", 0, "ok"), ("decoder", 0, "ok"), ("baseline", 1, "ok"), ("decoder", 1, "ok")]
    for run in results["runs"]:
        assert run["seconds"] > 0 and "train.seed=%d" % run["seed"] in run["overrides"]
        assert 0 <= run["metrics"]["miou"] <= 1 and run["metrics"]["epoch"] == 1
    decoder = results["arms"]["decoder"]
    assert decoder["miou"]["n"] == 2 and "aux_miou" in decoder and decoder["vs_baseline"]["seeds"] == [0, 1]
    assert "aux_miou" not in results["arms"]["baseline"]
    assert results["autoencoder"]["status"] == "ok" and "miou" in results["autoencoder"]["metrics"]
    # the phase-one checkpoint is the one the decoder arm read; the arms score last.pt, never best.pt
    assert any("autoencoder/checkpoints/last.pt" in item for item in results["runs"][1]["overrides"])
    report = (out / "report.md").read_text()
    assert "reconstruction mIoU" in report and "FINAL epoch" in report and "| decoder |" in report
    assert (out / "study.png").stat().st_size > 1000


def test_rerun_trains_nothing_and_a_failing_arm_is_reported(tiny_study):
    protocol_path, out = tiny_study
    protocol = load_protocol(protocol_path)
    again = run_study(protocol, out=out)
    assert again["trained"] == []
    assert all(run["status"] == "ok" for run in again["runs"])
    protocol.arms["broken"] = ["regularizer.kind=bogus"]
    protocol.seeds = [0]
    summary = run_study(protocol, out=out, jobs=2)
    assert summary["trained"] == ["broken/seed0"]
    failed = [run for run in summary["runs"] if run["status"] != "ok"]
    assert [run["name"] for run in failed] == ["broken/seed0"]
    assert Path(failed[0]["log"]).is_file() and "regularizer.kind" in Path(failed[0]["log"]).read_text()
    assert "## Failed runs" in (out / "report.md").read_text()
    assert failed[0]["log"] in (out / "report.md").read_text()


# ~26 s on the 2-core CPU: a fifth training run, the same tiny run the fixture already trains four times,
# only launched through submitit's local executor (the optional launcher); `make test-all` runs it.
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
