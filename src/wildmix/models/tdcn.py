"""A TDCN++ / Conv-TasNet style time-domain masking network (Luo & Mesgarani 2019).

Learned filterbank encoder -> bottleneck -> repeats of dilated depthwise-separable
convolution blocks -> sigmoid masks -> transposed-convolution decoder; mixture consistency
projection at the output. Heavy on a CPU; meant for GPU users.
"""

from __future__ import annotations

import torch
from torch import nn

from wildmix.models.consistency import mixture_consistency

PRESETS = {
    "tiny": dict(filters=32, kernel=16, bottleneck=32, hidden=64, blocks=3, repeats=1),
    "cpu": dict(filters=128, kernel=16, bottleneck=64, hidden=128, blocks=6, repeats=2),
    "gpu": dict(filters=256, kernel=16, bottleneck=128, hidden=512, blocks=8, repeats=3),
}


class _Norm(nn.Module):
    """Layer norm over channels of each frame (causal) or global over (C, frames)."""

    def __init__(self, channels: int, causal: bool):
        super().__init__()
        self.causal = causal
        self.norm = nn.GroupNorm(1, channels) if not causal else nn.LayerNorm(channels)

    def forward(self, x):  # (B, C, F)
        return self.norm(x.transpose(1, 2)).transpose(1, 2) if self.causal else self.norm(x)


class _Block(nn.Module):
    def __init__(self, bottleneck: int, hidden: int, dilation: int, causal: bool):
        super().__init__()
        self.pad, self.causal = 2 * dilation, causal
        self.inp = nn.Sequential(nn.Conv1d(bottleneck, hidden, 1), nn.PReLU(),
                                 _Norm(hidden, causal))
        self.depthwise = nn.Conv1d(hidden, hidden, 3, dilation=dilation, groups=hidden)
        self.post = nn.Sequential(nn.PReLU(), _Norm(hidden, causal))
        self.res = nn.Conv1d(hidden, bottleneck, 1)

    def forward(self, x):
        y = self.inp(x)
        left = self.pad if self.causal else self.pad // 2
        y = self.post(self.depthwise(nn.functional.pad(y, (left, self.pad - left))))
        return x + self.res(y)


class TDCN(nn.Module):
    """Time-domain convolutional separation network.

    Args:
        n_sources: M outputs.
        filters, kernel: learned filterbank size and length (stride ``kernel // 2``).
        bottleneck, hidden: channels of the separator.
        blocks, repeats: dilations ``1, 2, ..., 2^(blocks-1)``, repeated.
        consistency: mixture consistency weights (``"uniform"``, ``"energy"`` or None).
    """

    def __init__(self, n_sources: int = 3, filters: int = 128, kernel: int = 16,
                 bottleneck: int = 64, hidden: int = 128, blocks: int = 6, repeats: int = 2,
                 causal: bool = False, consistency: str | None = "uniform"):
        super().__init__()
        self.n_sources, self.filters, self.kernel = n_sources, filters, kernel
        self.stride, self.consistency = kernel // 2, consistency
        self.encoder = nn.Conv1d(1, filters, kernel, stride=self.stride, bias=False)
        self.norm = _Norm(filters, causal)
        self.bottleneck = nn.Conv1d(filters, bottleneck, 1)
        self.blocks = nn.Sequential(*[_Block(bottleneck, hidden, 2 ** b, causal)
                                      for _ in range(repeats) for b in range(blocks)])
        self.masks = nn.Sequential(nn.PReLU(), nn.Conv1d(bottleneck, n_sources * filters, 1))
        self.decoder = nn.ConvTranspose1d(filters, 1, kernel, stride=self.stride, bias=False)

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` mixture -> ``(B, M, T)`` sources."""
        n_batch, length = mixture.shape
        pad = (-(length - self.kernel)) % self.stride + self.stride
        x = nn.functional.pad(mixture, (self.stride, pad)).unsqueeze(1)
        w = torch.relu(self.encoder(x))  # (B, N, F)
        h = self.blocks(self.bottleneck(self.norm(w)))
        masks = torch.sigmoid(self.masks(h)).view(n_batch, self.n_sources, self.filters, -1)
        y = self.decoder((masks * w.unsqueeze(1)).flatten(0, 1))  # (B*M, 1, T')
        y = y.view(n_batch, self.n_sources, -1)[..., self.stride:self.stride + length]
        if self.consistency:
            y = mixture_consistency(y, mixture, weights=self.consistency)
        return y
