"""Protocols: named autoencoders per arm, real data sets, scored subsets, diagnostics in the report (no training)."""
import json
import math
from pathlib import Path

import pytest

from labelreg.config import ConfigError
from labelreg.study import load_protocol
from labelreg.study.report import markdown, summarize
from labelreg.study.runner import autoencoder_spec, launch_runs, prepare_data, read_diagnostics, run_spec

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo"
AE = f"{{config: {DEMO}/ae-128_synth-nyu40.yaml}}"
BASE = f"base: {DEMO}/zoomout-densenet67-tiny_synth-nyu40.yaml\nseeds: [0, 1]\n"
DECODER = "[regularizer.kind=decoder]"


def protocol_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yml"
    path.write_text(BASE + text)
    return path


def test_a_real_data_set_is_passed_to_every_run_and_never_synthesized(tmp_path):
    root = tmp_path / "camvid"
    path = protocol_file(tmp_path, f"data: {{dataset: camvid, root: {root}}}\nscore_subsets: [Seq05VD]\n"
                                   f"autoencoder: {AE}\narms: {{baseline: [], decoder: {DECODER}}}\n")
    protocol = load_protocol(path)
    expected = ["data.dataset=camvid", f"data.root={root}", "data.synthesize_if_missing=false", "data.val_split=test",
                "train.eval_every=100000"]
    for spec in (run_spec(protocol, tmp_path, "decoder", 1), autoencoder_spec(protocol, tmp_path,
                                                                              protocol.autoencoders["autoencoder"])):
        assert spec["overrides"][:5] == expected
    with pytest.raises(ConfigError, match=f"data.root {root} does not exist"):
        prepare_data(protocol)
    root.mkdir()
    prepare_data(protocol)
    assert list(root.iterdir()) == []  # nothing synthesized into a real data set's folder
    assert protocol.score_subsets == ["Seq05VD"]


def test_the_single_autoencoder_form_keeps_its_run_folder():
    protocol = load_protocol("quick")
    assert [(p.name, p.run_name) for p in protocol.autoencoders_needed()] == [("autoencoder", "autoencoder")]


@pytest.mark.parametrize("text, message", [
    (f"autoencoders: {{a: {AE}, b: {AE}}}\narms: {{baseline: [], decoder: {DECODER}}}",
     r"arm 'decoder' uses phase one; name its autoencoder \(arms.decoder.autoencoder: one of \['a', 'b'\]\)"),
    (f"autoencoders: {{a: {AE}}}\narms: {{baseline: [], decoder: {{autoencoder: c, overrides: {DECODER}}}}}",
     r"arms.decoder.autoencoder='c' is not among the autoencoders \['a'\]"),
    (f"autoencoders: {{a: {AE}}}\narms: {{baseline: {{autoencoder: a}}}}",
     r"arms.baseline.autoencoder='a', but the arm reads no phase-one checkpoint"),
    (f"autoencoder: {AE}\nautoencoders: {{a: {AE}}}\narms: {{baseline: []}}", "either autoencoder .* or autoencoders"),
    (f"autoencoders: {{a: {{config: x.yaml, widht: 32}}}}\narms: {{baseline: []}}",
     r"autoencoders.a has unknown keys \['widht'\]"),
    ("arms: {baseline: [], autoencoders: []}", "arm name 'autoencoders'"),
    ("arms: {baseline: {overides: []}}", r"arms.baseline has unknown keys \['overides'\]"),
    ("arms: {baseline: []}\nscore_subsets: Seq05VD", "score_subsets is a list of subset names"),
])
def test_protocol_mistakes_are_named(tmp_path, text, message):
    data = "data: {root: d, labeled: 4, size: [32, 48]}\n"
    with pytest.raises(ConfigError, match=message):
        load_protocol(protocol_file(tmp_path, data + text + "\n"))


def test_real_data_keys_are_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"data has unknown keys \['labeled'\] for data.dataset=camvid"):
        load_protocol(protocol_file(tmp_path, "data: {dataset: camvid, root: x, labeled: 4}\narms: {baseline: []}\n"))


def run(arm, seed, miou, subset, diagnostics=None):
    return {"arm": arm, "seed": seed, "name": f"{arm}/seed{seed}", "status": "ok", "seconds": 1.0, "log": "x.log",
            "metrics": {"miou": miou, "Seq05VD_miou": subset, "aux_Seq05VD_miou": subset / 2},
            "diagnostics": diagnostics}


def test_subsets_and_diagnostics_are_summarized_per_arm(tmp_path):
    """Seq05VD: baseline 30, 40; decoder 35, 43 → decoder 39.0 ± t(0.975, 1)·√32/√2 = 50.8; paired
    differences 5, 3: 4.00 ± 12.706·√2/√2 = 12.71, t = 4 with one degree of freedom (a Cauchy law):
    p = 1 − (2/π)·atan 4 = 0.156."""
    protocol = load_protocol(protocol_file(tmp_path, (
        f"data: {{dataset: camvid, root: x}}\nscore_subsets: [Seq05VD]\nautoencoder: {AE}\n"
        f"arms: {{baseline: [], decoder: {DECODER}}}\n")))
    first = {"grad_ratio": {"step0": 16.0, "frac10": 1.5, "end": 1.3}, "grad_cosine": {"step0": -0.1},
             "code_cosine": 0.2, "code_negative_fraction": 0.5, "grad_norms": {"step0": {"main": 1.0}}}
    second = {"grad_ratio": {"step0": 14.0}, "code_cosine": 0.16}
    results = [run("baseline", 0, 0.5, 0.30), run("decoder", 0, 0.5, 0.35, first),
               run("baseline", 1, 0.5, 0.40), run("decoder", 1, 0.5, 0.43, second)]
    arms = summarize(protocol, results)
    subset = arms["decoder"]["subsets"]["Seq05VD"]
    assert subset["miou"]["mean"] == pytest.approx(39.0)
    assert subset["vs_baseline"]["difference"]["mean"] == pytest.approx(4.0)
    assert subset["vs_baseline"]["p_value"] == pytest.approx(1 - 2 / math.pi * math.atan(4))
    assert arms["baseline"]["subsets"]["Seq05VD"]["miou"]["mean"] == pytest.approx(35.0)
    diagnostics = arms["decoder"]["diagnostics"]
    assert diagnostics["grad_ratio/step0"]["mean"] == pytest.approx(15.0) and diagnostics["grad_ratio/step0"]["n"] == 2
    assert diagnostics["grad_ratio/frac10"]["n"] == 1 and diagnostics["code_cosine"]["mean"] == pytest.approx(0.18)
    assert set(diagnostics) == {"grad_ratio/step0", "grad_ratio/frac10", "grad_ratio/end", "grad_cosine/step0",
                                "code_cosine", "code_negative_fraction"}
    assert "diagnostics" not in arms["baseline"]  # no diagnostics.json: left out silently
    report = markdown(protocol, arms, {}, 1.0, results)
    assert subset["aux_miou"]["mean"] == pytest.approx(19.5)
    assert "aux_miou" not in arms["baseline"]["subsets"]["Seq05VD"]
    assert "| decoder | 39.0 ± 50.8 | 19.5 ± 25.4 | 4.00 ± 12.71 | 0.156 |" in report
    assert "| decoder | 15.00 ± 12.71 | 1.50 (n=1) | 1.30 (n=1) | -0.10 (n=1) | 0.18 ± 0.25 | 0.50 (n=1) |" in report


def test_read_diagnostics_skips_what_is_absent_or_unreadable(tmp_path, capsys):
    assert read_diagnostics(tmp_path) is None
    (tmp_path / "diagnostics.json").write_text("{not json")
    assert read_diagnostics(tmp_path) is None and "unreadable" in capsys.readouterr().out
    (tmp_path / "diagnostics.json").write_text(json.dumps({"code_cosine": 0.5}))
    assert read_diagnostics(tmp_path) == {"code_cosine": 0.5}


class Finished:
    """A launcher whose runs end at once with a given status, recording the order they were started in."""

    def __init__(self, failing: set[str]):
        self.failing, self.started = failing, []

    def start(self, spec):
        self.started.append(spec["name"])
        status = "failed" if spec["name"] in self.failing else "ok"
        record = {**spec, "status": status, "seconds": 1.0, "metrics": {"miou": 0.5}, "error": "exit status 2"}
        return type("Handle", (), {"result": lambda self: record})()


def test_arms_start_after_their_own_autoencoder_and_not_at_all_when_it_failed(tmp_path):
    protocol = load_protocol(protocol_file(tmp_path, (
        f"data: {{root: d, labeled: 4, size: [32, 48]}}\nautoencoders: {{a: {AE}, b: {AE}}}\n"
        f"arms: {{baseline: [], ce: {{autoencoder: a, overrides: {DECODER}}}, "
        f"mse: {{autoencoder: b, overrides: {DECODER}}}}}\n")))
    specs = [run_spec(protocol, tmp_path, arm, seed) for seed in protocol.seeds for arm in protocol.arms]
    phase_ones = {p.name: autoencoder_spec(protocol, tmp_path, p) for p in protocol.autoencoders_needed()}
    launcher = Finished(failing={"autoencoders/a"})
    todo = [*phase_ones.values(), *specs]
    autoencoders, results, started = launch_runs(protocol, launcher, phase_ones, specs, todo)
    assert launcher.started == started == ["autoencoders/a", "autoencoders/b", "baseline/seed0", "baseline/seed1",
                                           "mse/seed0", "mse/seed1"]
    assert [autoencoders[name]["status"] for name in ("a", "b")] == ["failed", "ok"]
    assert {r["name"]: r["status"] for r in results} == {
        "baseline/seed0": "ok", "ce/seed0": "failed", "mse/seed0": "ok",
        "baseline/seed1": "ok", "ce/seed1": "failed", "mse/seed1": "ok"}
    assert results[1]["error"].startswith("not run: its autoencoder 'a' failed")
