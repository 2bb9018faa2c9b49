import pytest
import torch
import torch.nn.functional as F

from labelreg.models import AE_VARIANTS, LabelAutoencoder, one_hot_labels

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/models/test_models.py


def test_one_hot_ignores_void_and_rejects_out_of_range():
    label = torch.tensor([[[0, 2], [255, 1]]])
    onehot = one_hot_labels(label, 3)
    assert onehot.shape == (1, 3, 2, 2)
    assert onehot[0, :, 1, 0].tolist() == [0, 0, 0]  # ignore → all zero
    assert onehot[0, :, 0, 1].tolist() == [0, 0, 1]
    with pytest.raises(ValueError, match=r"\[3\].*outside 0\.\.2"):
        one_hot_labels(torch.tensor([[[3]]]), 3)


@pytest.mark.parametrize("variant", sorted(AE_VARIANTS))
@pytest.mark.parametrize("size", [(32, 48), (48, 16), (64, 80)])
def test_shapes_and_widths(variant, size):
    model = LabelAutoencoder(5, variant)
    out = model(one_hot_labels(torch.randint(0, 5, (2, *size)), 5))
    assert out["seg"].shape == (2, 5, *size)
    assert out["code"].shape == (2, AE_VARIANTS[variant][-1], size[0] // 16, size[1] // 16)
    features = model.encoder.forward_features(one_hot_labels(torch.randint(0, 5, (1, *size)), 5))
    assert [f.shape[1] for f in features.values()] == list(AE_VARIANTS[variant])
    assert features["conv1"].shape[-2:] == size and features["conv3"].shape[-2:] == (size[0] // 4, size[1] // 4)


def test_rejects_sizes_not_divisible_by_16_and_bad_variant():
    model = LabelAutoencoder(4, "32")
    with pytest.raises(ValueError, match="divisible by 16"):
        model(torch.zeros(1, 4, 40, 48))
    with pytest.raises(ValueError, match="expected B×4×H×W"):
        model(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="unknown autoencoder variant"):
        LabelAutoencoder(4, "64")


def test_encoder_and_decoder_compose_to_the_autoencoder():
    torch.manual_seed(0)
    model = LabelAutoencoder(6, "128").eval()
    onehot = one_hot_labels(torch.randint(0, 6, (1, 32, 32)), 6)
    assert torch.allclose(model.decoder(model.encoder(onehot)), model(onehot)["seg"])


@pytest.mark.parametrize("size", [(32, 48), (37, 45)])
def test_decode_to_is_the_decoder_then_a_top_left_crop_run_channels_last(size):
    """Phase two's branch: the same values (float64) and input gradients as the decoder's 16h×16w output cut to
    its top-left H×W, with every decoder layer fed a channels-last map (the layout it is fast in, docs/bench.md)."""
    torch.manual_seed(0)
    decoder = LabelAutoencoder(5, "128").decoder.double().eval()
    rows, cols = -(-size[0] // 16), -(-size[1] // 16)  # ⌈H/16⌉×⌈W/16⌉: 2×3, 3×3
    code = torch.randn(2, 128, rows, cols, dtype=torch.float64, requires_grad=True)
    reference = decoder(code)[..., :size[0], :size[1]]
    (grad_reference,) = torch.autograd.grad(reference.square().sum(), code)
    layouts = []
    hooks = [m.register_forward_pre_hook(lambda _m, args: layouts.append(
        args[0].is_contiguous(memory_format=torch.channels_last))) for m in decoder.modules()
        if isinstance(m, torch.nn.Conv2d)]
    logits = decoder.decode_to(code, size)
    for hook in hooks:
        hook.remove()
    (grad,) = torch.autograd.grad(logits.square().sum(), code)
    assert logits.shape == (2, 5, *size)
    assert torch.allclose(logits, reference, atol=1e-12) and torch.allclose(grad, grad_reference, atol=1e-12)
    assert layouts == [True] * 5


def test_decode_to_keeps_phase_ones_cell_geometry_at_an_odd_size():
    """A code cell stands for the same 16×16 pixels as in phase one, which pads a 37×45 map to 48×48 at the
    bottom/right and crops back: the reconstruction of the padded map's code, cut to 37×45, is what
    ``decode_to`` gives for the unpadded size (a resize would stretch 48 rows onto 37)."""
    torch.manual_seed(0)
    model = LabelAutoencoder(4, "32").double().eval()
    label = torch.zeros(1, 37, 45, dtype=torch.long)
    label[:, 16:32, 32:] = 3  # a block whose edges are cell edges: rows 16..31, columns 32..44
    padded = F.pad(label, (0, 3, 0, 11), value=255)
    with torch.no_grad():
        code = model.encoder(one_hot_labels(padded, 4).double())
        phase_one = model.decoder(code)[..., :37, :45]  # labelreg.tasks.autoencoder.autoencoder_forward
        logits = model.decoder.decode_to(code, (37, 45))
    assert code.shape[-2:] == (3, 3)
    assert torch.equal(logits, phase_one)
    # the same code decoded to the full padded extent agrees pixel for pixel inside the image
    with torch.no_grad():
        assert torch.equal(model.decoder.decode_to(code, (48, 48))[..., :37, :45], logits)
    with pytest.raises(ValueError, match=r"37×45 needs a ⌈H/16⌉×⌈W/16⌉ = 3×3 code"):
        model.decoder.decode_to(code[..., :2, :], (37, 45))


def test_every_parameter_gets_a_gradient():
    model = LabelAutoencoder(4, "256")
    label = torch.randint(0, 4, (2, 32, 32))
    F.cross_entropy(model(one_hot_labels(label, 4))["seg"], label).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_learns_to_reconstruct_simple_shapes():
    torch.manual_seed(0)
    labels = torch.zeros(8, 32, 32, dtype=torch.long)
    for i in range(8):  # a square of class 1 and a bar of class 2 at varying places
        y, x = 2 + i, 3 + 2 * i % 12
        labels[i, y:y + 10, x:x + 10] = 1
        labels[i, 24:28, :] = 2
    model = LabelAutoencoder(3, "32")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        loss = F.cross_entropy(model(one_hot_labels(labels, 3))["seg"], labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    accuracy = (model(one_hot_labels(labels, 3))["seg"].argmax(1) == labels).float().mean()
    assert accuracy > 0.95
