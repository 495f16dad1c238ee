"""SFCN laid out as the reference code lays it out (ha-ha-ha-han/UKBiobank_deep_pretrain,
``dp_model/model_files/sfcn.py``): an independent construction that checkpoints in its naming come from."""

from __future__ import annotations

import torch
from torch import nn


class ReferenceSFCN(nn.Module):
    """``feature_extractor.conv_<i>`` blocks and ``classifier.conv_<n>``; ``avg_shape`` is its hard-coded [5, 6, 5]."""

    def __init__(self, channel_number=(32, 64, 128, 256, 256, 64), output_dim=40, avg_shape=(5, 6, 5)):
        super().__init__()
        self.feature_extractor = nn.Sequential()
        for i, out_channel in enumerate(channel_number):
            in_channel = 1 if i == 0 else channel_number[i - 1]
            last = i == len(channel_number) - 1
            layers = [nn.Conv3d(in_channel, out_channel, kernel_size=1 if last else 3, padding=0 if last else 1),
                      nn.BatchNorm3d(out_channel)]
            layers += [nn.ReLU()] if last else [nn.MaxPool3d(2, stride=2), nn.ReLU()]
            self.feature_extractor.add_module(f"conv_{i}", nn.Sequential(*layers))
        self.classifier = nn.Sequential()
        self.classifier.add_module("average_pool", nn.AvgPool3d(avg_shape))
        self.classifier.add_module("dropout", nn.Dropout(0.5))
        self.classifier.add_module(f"conv_{len(channel_number)}", nn.Conv3d(channel_number[-1], output_dim, 1))

    def forward(self, x):
        return torch.log_softmax(self.classifier(self.feature_extractor(x)), dim=1)


def perturb_batch_norms(model: nn.Module) -> None:
    """Running statistics that are not the initial ones, so that loading them matters."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
