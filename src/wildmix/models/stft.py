"""A light STFT-domain masking network, the CPU default.

Log-power spectrogram -> per-frame projection -> a stack of (optionally causal) dilated
temporal convolution blocks or a GRU -> one mask per output and time-frequency bin ->
inverse STFT with the mixture's phase. Softmax masks sum to one in every bin, so the
outputs sum to the input exactly (mixture consistency by construction).

Level invariance without looking ahead: the features are the log-power minus the running
(cumulative) mean of the frame log-energy, so a gain on the input shifts nothing.
"""

from __future__ import annotations

import torch
from torch import nn

from wildmix.models.consistency import mixture_consistency

PRESETS = {
    "tiny": dict(n_fft=256, hop=128, hidden=32, blocks=2, arch="tcn"),
    "cpu": dict(n_fft=512, hop=256, hidden=256, blocks=6, arch="tcn"),
    "gpu": dict(n_fft=512, hop=128, hidden=512, blocks=10, arch="tcn"),
    # for wildmix.stream: 20 ms window, 10 ms hop, no look-ahead (20 ms algorithmic latency)
    "stream": dict(n_fft=320, hop=160, hidden=256, blocks=6, arch="tcn", causal=True),
}


class _Block(nn.Module):
    """Residual block: depthwise dilated conv over frames, then a pointwise mix."""

    def __init__(self, channels: int, dilation: int, kernel: int, causal: bool):
        super().__init__()
        self.pad = (kernel - 1) * dilation
        self.causal = causal
        self.norm = nn.LayerNorm(channels)
        self.depthwise = nn.Conv1d(channels, channels, kernel, dilation=dilation,
                                   groups=channels)
        self.pointwise = nn.Conv1d(channels, channels, 1)
        self.act = nn.PReLU(channels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, C, F)
        y = self.norm(h.transpose(1, 2)).transpose(1, 2)  # per-frame norm: causal
        left = self.pad if self.causal else self.pad // 2
        y = nn.functional.pad(y, (left, self.pad - left))
        return h + self.pointwise(self.act(self.depthwise(y)))


class STFTMasker(nn.Module):
    """STFT masking network.

    Args:
        n_sources: M outputs.
        n_fft, hop: STFT size and hop in samples (Hann window).
        hidden: channels of the temporal network.
        blocks: number of dilated convolution blocks (``arch="tcn"``) or GRU layers
            (``arch="gru"``).
        causal: no look-ahead beyond the current STFT frame (for streaming).
        mask: ``"softmax"`` (outputs sum to the input) or ``"sigmoid"`` (independent masks;
            then ``consistency`` projects the outputs onto the mixture).
    """

    def __init__(self, n_sources: int = 3, n_fft: int = 512, hop: int = 256,
                 hidden: int = 256, blocks: int = 6, arch: str = "tcn", kernel: int = 3,
                 causal: bool = False, mask: str = "softmax",
                 consistency: str | None = None):
        super().__init__()
        if arch not in ("tcn", "gru"):
            raise ValueError(f"arch must be 'tcn' or 'gru', got {arch!r}")
        if mask not in ("softmax", "sigmoid"):
            raise ValueError(f"mask must be 'softmax' or 'sigmoid', got {mask!r}")
        self.n_sources, self.n_fft, self.hop = n_sources, n_fft, hop
        self.arch, self.causal, self.mask, self.consistency = arch, causal, mask, consistency
        bins = n_fft // 2 + 1
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.inp = nn.Conv1d(bins, hidden, 1)
        if arch == "tcn":
            self.net = nn.ModuleList(_Block(hidden, 2 ** (i % 5), kernel, causal)
                                     for i in range(blocks))
        else:
            self.gru = nn.GRU(hidden, hidden, num_layers=blocks, batch_first=True,
                              bidirectional=not causal)
            self.gru_out = nn.Linear(hidden * (1 if causal else 2), hidden)
        self.out_norm = nn.LayerNorm(hidden)
        self.out = nn.Conv1d(hidden, n_sources * bins, 1)

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` mixture -> ``(B, M, T)`` sources."""
        n_batch, length = mixture.shape
        # causal: zero padding at the ends (reflection would look a frame ahead at the start)
        spec = torch.stft(mixture, self.n_fft, self.hop, window=self.window,
                          pad_mode="constant" if self.causal else "reflect",
                          return_complex=True)  # (B, K, F)
        power = spec.real.square() + spec.imag.square()
        logp = torch.log(power + 1e-8)  # (B, K, F)
        frame = logp.mean(1, keepdim=True)  # (B, 1, F)
        steps = torch.arange(1, frame.shape[-1] + 1, device=frame.device, dtype=frame.dtype)
        level = frame.cumsum(-1) / steps  # running mean: causal
        h = self.inp((logp - level) / 4.0)  # (B, H, F)
        if self.arch == "tcn":
            for block in self.net:
                h = block(h)
        else:
            h = h + self.gru_out(self.gru(h.transpose(1, 2))[0]).transpose(1, 2)
        h = self.out_norm(h.transpose(1, 2)).transpose(1, 2)
        logits = self.out(h).view(n_batch, self.n_sources, -1, h.shape[-1])  # (B, M, K, F)
        masks = logits.softmax(1) if self.mask == "softmax" else logits.sigmoid()
        sources = torch.istft((masks * spec.unsqueeze(1)).flatten(0, 1), self.n_fft, self.hop,
                              window=self.window, length=length)
        sources = sources.view(n_batch, self.n_sources, length)  # (B, M, T)
        if self.consistency:
            sources = mixture_consistency(sources, mixture, weights=self.consistency)
        return sources
