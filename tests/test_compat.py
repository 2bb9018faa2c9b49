import subprocess
import sys

import torch


def test_import_labelreg_then_torchvision_model_runs():
    import labelreg  # noqa: F401  (installs the guard)
    import torchvision

    model = torchvision.models.resnet18(weights=None).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 37, 53))
    assert out.shape == (1, 1000)


def test_guard_reports_whether_compiled_ops_exist():
    import labelreg
    import torchvision

    assert labelreg.TORCHVISION_OPS_AVAILABLE == torchvision.extension._has_ops()


def test_fresh_interpreter_imports_torchvision_through_the_package():
    # A fresh process proves the guard works at import time, not thanks to state left by other tests.
    code = "import labelreg, torchvision, torchvision.transforms.v2; print(torchvision.models.vgg16().features[0])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Conv2d(3, 64" in result.stdout
