"""LFSS: every equation on hand-checkable tensors, the ASPP decoder, circle training, no ground truth as input, tiers."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fsslib.blocks import ASPPDecoder, AtrousSpatialPyramidPooling, aspp_rates


# --------------------------------------------------------------------------- ASPP decoder (Eqs. 18-19)


def test_aspp_rates_are_canet_asgnet_rates_scaled_like_the_fem_bins():
    assert aspp_rates(60) == [6, 12, 18]
    assert aspp_rates(50) == [5, 10, 15]  # LFSS: 400 x 400 at output stride 8
    assert aspp_rates(8) == [1, 2, 2]  # toy tier


def test_aspp_dilates_its_3x3_branches_by_the_scaled_rates():
    torch.manual_seed(0)
    aspp = AtrousSpatialPyramidPooling(2, 3)
    x = torch.randn(1, 2, 50, 50)
    pooled = F.relu(aspp.pooled(x.mean((2, 3), keepdim=True))).expand(-1, -1, 50, 50)
    branches = [pooled, F.relu(aspp.pointwise(x))] + [
        F.relu(F.conv2d(x, conv.weight, conv.bias, padding=rate, dilation=rate))
        for conv, rate in zip(aspp.dilated, (5, 10, 15))]
    torch.testing.assert_close(aspp(x), F.relu(aspp.fuse(torch.cat(branches, 1))))
    assert ASPPDecoder(5, 4)(torch.randn(2, 5, 8, 8)).shape == (2, 2, 8, 8)
