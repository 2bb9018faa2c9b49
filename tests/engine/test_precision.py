"""``train.amp: auto``: bf16 where the CPU (or GPU) computes it natively, fp32 elsewhere, judged from cpuinfo flags."""
import pytest
import torch

from labelreg.config import ConfigError, config_from_dict
from labelreg.engine import precision
from labelreg.engine.loop import autocast
from labelreg.engine.precision import cpu_flags, cpu_model, native_bf16_cpu, resolve_amp

X86 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16 amx_tile amx_bf16

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2
"""
ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes bf16 i8mm
CPU implementer\t: 0x41
CPU part\t: 0xd40
"""
CPU = torch.device("cpu")


def test_cpu_flags_are_read_from_the_first_processor(tmp_path):
    x86, arm = tmp_path / "x86", tmp_path / "arm"
    x86.write_text(X86)
    arm.write_text(ARM)
    assert cpu_flags(x86) == {"fpu", "sse2", "avx2", "avx512f", "avx512bw", "avx512_bf16", "amx_tile", "amx_bf16"}
    assert "bf16" in cpu_flags(arm) and "i8mm" in cpu_flags(arm)
    assert cpu_flags(tmp_path / "missing") == frozenset()
    assert cpu_model(x86) == "Intel(R) Xeon(R) Platinum 8480+" and cpu_model(arm) == "0xd40"
    assert cpu_model(tmp_path / "missing") == "unknown"


@pytest.mark.parametrize("flags, expected", [
    ({"avx2", "avx512f", "avx512_bf16"}, "bf16"),   # Cooper Lake / Zen 4
    ({"avx512f", "amx_bf16"}, "bf16"),              # Sapphire Rapids
    ({"fp", "asimd", "bf16"}, "bf16"),              # Arm with the BF16 extension
    ({"avx2", "avx512f", "avx512bw"}, "none"),      # AVX-512 without bf16: emulated, slower than fp32
    (set(), "none"),                                # no /proc/cpuinfo (macOS, Windows)
])
def test_auto_is_bf16_only_on_a_cpu_with_native_bf16(flags, expected):
    assert native_bf16_cpu(frozenset(flags)) == (expected == "bf16")
    assert resolve_amp("auto", CPU, flags=frozenset(flags)) == expected
    for explicit in ("none", "bf16", "fp16"):  # an explicit choice is kept whatever the CPU
        assert resolve_amp(explicit, CPU, flags=frozenset(flags)) == explicit


@pytest.mark.parametrize("bf16_supported, expected", [(True, "bf16"), (False, "none")])
def test_auto_on_cuda_asks_the_gpu(monkeypatch, bf16_supported, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16_supported)
    assert resolve_amp("auto", torch.device("cuda"), flags=frozenset({"avx512_bf16"})) == expected


@pytest.mark.parametrize("flags, dtype", [({"amx_bf16"}, torch.bfloat16), ({"avx2"}, torch.float32)])
def test_the_engine_autocasts_as_auto_resolves(monkeypatch, flags, dtype):
    monkeypatch.setattr(precision, "machine_flags", lambda: frozenset(flags))
    a = torch.randn(3, 5)
    with autocast(CPU, "auto"):
        assert (a @ a.T).dtype == dtype


def test_config_accepts_auto_and_names_the_key_otherwise():
    assert config_from_dict({"train": {"amp": "auto"}}).train.amp == "auto"
    with pytest.raises(ConfigError, match=r"train\.amp='fast'.*auto"):
        config_from_dict({"train": {"amp": "fast"}})
