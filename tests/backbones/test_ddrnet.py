"""DDRNet-23(-slim): the published sizes, logits at the input size, the authors' key layout."""

import pytest
import torch

from dynvid.backbones.ddrnet import DDRNet, ddrnet23, ddrnet23_slim


@pytest.mark.parametrize("builder,millions", [(ddrnet23_slim, 5.70), (ddrnet23, 20.15)])
def test_parameter_counts_match_the_paper(builder, millions):
    """DDRNet paper, Table 8 (Cityscapes, 19 classes): 5.7 M and 20.1 M parameters."""
    params = sum(p.numel() for p in builder(19).parameters()) / 1e6
    assert params == pytest.approx(millions, abs=0.01)


def test_logits_at_the_input_size_and_gradients_reach_the_stem():
    net = ddrnet23_slim(num_classes=5)
    x = torch.randn(2, 3, 96, 128)
    out = net(x)
    assert out.shape == (2, 5, 96, 128)
    out.mean().backward()
    assert net.conv1[0].weight.grad.abs().sum() > 0 and net.spp.scale4[3].weight.grad.abs().sum() > 0


def test_keys_follow_the_released_layout():
    keys = set(DDRNet(num_classes=3).state_dict())
    for k in ("conv1.0.weight", "layer3_.0.conv1.weight", "compression3.0.weight", "down4.3.weight",
              "layer5_.0.conv3.weight", "spp.scale1.3.weight", "spp.process4.2.weight", "final_layer.conv2.bias"):
        assert k in keys, k
    with pytest.raises(ValueError, match="num_classes"):
        DDRNet(num_classes=0)


def test_bilateral_fusion_exchanges_the_pre_fusion_outputs():
    """The high branch gets compression3 of layer3's own output, not of the already-fused low branch:
    zeroing down3 must leave the high branch (hence compression3's input) unchanged."""
    torch.manual_seed(0)
    net = DDRNet(num_classes=3).eval()
    seen = []
    net.compression3.register_forward_hook(lambda m, i, o: seen.append(i[0].clone()))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        net(x)
        torch.nn.init.zeros_(net.down3[0].weight)
        net.down3[1].bias.data.fill_(5.0)  # a fused low branch would now differ everywhere
        net(x)
    assert torch.equal(seen[0], seen[1])
