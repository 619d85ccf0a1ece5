"""How a batch becomes a loss: MixIT, supervised training and RemixIT.

Each strategy takes plain arguments and is usable on its own::

    strategy = MixIT(allowed=enhancement_constraint(3))
    loss = strategy.loss(model, batch, step)      # batch (B, 2, T): two mixtures

The training loop (:mod:`wildmix.train`) calls ``start`` once, ``loss`` every step and
``after_step`` after each optimiser step, and keeps ``state_dict()`` in its checkpoints
(RemixIT's teacher), so that a resumed run continues exactly.
"""

from __future__ import annotations

import logging

import torch

from wildmix import losses
from wildmix.config import interval_steps
from wildmix.mixit import MixITResult, mixit_loss, pit_loss

log = logging.getLogger("wildmix")


class Strategy:
    """A batch in, a loss out. Subclasses may keep state (a teacher) in checkpoints."""

    def start(self, model: torch.nn.Module, state: dict | None, epoch_steps: int) -> None:
        """Called once before the loop; ``state`` is ``state_dict()`` of a resumed run, None
        for a new one."""

    def loss(self, net, batch: torch.Tensor, step: int) -> torch.Tensor:
        raise NotImplementedError

    def after_step(self, model: torch.nn.Module, step: int) -> None:
        """Called after each optimiser step with the (unwrapped) model and the new step."""

    def state_dict(self) -> dict:
        return {}


class MixIT(Strategy):
    """``batch (B, 2, T)`` reference mixtures; the model separates their sum (Wisdom et al.
    2020), optionally with the sparsity penalty on its outputs and, for enhancement, the
    leakage penalty (:func:`wildmix.losses.leakage`) on the noise outputs that the remix gives
    to the noisy recording, and the overlap penalty (:func:`wildmix.losses.overlap`; output 0
    against the others when ``allowed`` is given, every pair otherwise). The overlap penalty
    only consolidates a split the network has already learned: it is off for the first
    ``overlap_start`` steps and reaches its weight after as many again (from the first step,
    it decides which output gets the speech and output 0 can lose it). ``sparsity_start``
    delays the sparsity penalty the same way (0: from the first step)."""

    def __init__(self, loss: str = "snr", search: str = "exact",
                 allowed: torch.Tensor | None = None, snr_max: float = 30.0,
                 sparsity: float = 0.0, leakage: float = 0.0, overlap: float = 0.0,
                 overlap_start: int = 1000, sparsity_start: int = 0):
        self.loss_name, self.search, self.allowed = loss, search, allowed
        self.snr_max, self.sparsity, self.leakage = snr_max, sparsity, leakage
        self.overlap, self.overlap_start = overlap, overlap_start
        self.sparsity_start = sparsity_start

    def loss(self, net, batch, step):
        estimates = net(batch.sum(1)).float()  # (B, M, T)
        if not torch.isfinite(estimates).all():
            return estimates.new_tensor(float("nan"))
        result = self.mixit(batch, estimates)
        loss = result.loss
        weight = self.sparsity * ramp(step, self.sparsity_start)
        if weight:
            loss = loss + weight * losses.sparsity(estimates).mean()
        if self.leakage:
            leak = losses.leakage(estimates, result.mixing.detach(), batch[:, 0])
            loss = loss + self.leakage * leak.mean()
        weight = self.overlap * ramp(step, self.overlap_start)
        if weight:
            shared = losses.overlap(estimates, "all" if self.allowed is None else "first")
            loss = loss + weight * shared.mean()  # a full overlap costs `weight` dB
        return loss

    def mixit(self, mixtures: torch.Tensor, estimates: torch.Tensor,
              reduction: str = "mean") -> MixITResult:
        """MixIT of ``estimates (B, M, T)`` against ``mixtures (B, N, T)``: the loss (a scalar,
        or ``(B,)`` with ``reduction="none"``) and the chosen mixing matrices."""
        return mixit_loss(mixtures, estimates, loss=self.loss_name, search=self.search,
                          allowed=self.allowed, snr_max=self.snr_max, reduction=reduction)


def ramp(step: int, start: int) -> float:
    """0 for the first ``start`` steps, then rising linearly to 1 over as many again; 1 from
    the first step when ``start`` is 0."""
    if start <= 0:
        return 1.0
    return min(1.0, max(0.0, step / start - 1.0))


def speech_noise_loss(estimates: torch.Tensor, speech: torch.Tensor, noise: torch.Tensor,
                      loss: str = "snr", snr_max: float = 30.0) -> torch.Tensor:
    """Output 0 against ``speech (B, T)``, the sum of the others against ``noise (B, T)``;
    ``estimates (B, M, T)``; the batch mean of the two losses' sum."""
    est = torch.stack([estimates[:, 0], estimates[:, 1:].sum(1)], 1)  # (B, 2, T)
    refs = torch.stack([speech, noise], 1)  # (B, 2, T)
    if loss == "sisnr":
        return losses.neg_sisnr(est, refs).sum(1).mean()
    return losses.neg_snr(est, refs, snr_max=snr_max).sum(1).mean()


class Supervised(Strategy):
    """``batch (B, 2, T)`` = ``[noisy, clean]``: output 0 is the speech, the rest the noise."""

    def __init__(self, loss: str = "snr", snr_max: float = 30.0):
        self.loss_name, self.snr_max = loss, snr_max

    def loss(self, net, batch, step):
        noisy, clean = batch[:, 0], batch[:, 1]
        return speech_noise_loss(net(noisy).float(), clean, noisy - clean, self.loss_name,
                                 self.snr_max)


class PIT(Strategy):
    """Supervised separation: ``batch (B, R, T)`` reference sources (zero rows for absent
    ones); the model separates their sum and the best one-to-one assignment of outputs to
    references is scored (:func:`wildmix.mixit.pit_loss`); silent references push their
    outputs to silence (``loss="snr"``)."""

    def __init__(self, loss: str = "snr", snr_max: float = 30.0):
        self.loss_name, self.snr_max = loss, snr_max

    def loss(self, net, batch, step):
        mixture = batch.sum(1)  # (B, T)
        estimates = net(mixture).float()  # (B, M, T)
        if not torch.isfinite(estimates).all():
            return estimates.new_tensor(float("nan"))
        return pit_loss(batch, estimates, loss=self.loss_name, snr_max=self.snr_max,
                        mixtures=mixture if self.loss_name == "snr" else None).loss


class RemixIT(Strategy):
    """Self-training with bootstrapped remixing (Tzinis et al., IEEE JSTSP 2022).

    ``batch (B, 1, T)`` in-domain noisy recordings. The frozen teacher estimates speech
    ``s`` and noise ``n`` (the sum of its other outputs) of each; the noises are permuted
    across the batch (a derangement: every example gets another's noise) and added back,
    ``s_b + n_pi(b)``; the student learns to recover ``s_b`` and ``n_pi(b)`` from that new
    mixture. The teacher follows the student: an exponential moving average
    (``teacher <- m teacher + (1 - m) student``) or a replacement, every ``every``
    (``"step"``, ``"epoch"``, ``"N steps"``, ``"N epochs"``); or it stays frozen.

    ``batch (B, 3, T)`` = ``[recording, noisy, clean]`` adds the supervised loss of
    :class:`Supervised` on the pairs (clean speech of other voices in the recordings' noise):
    true targets beside the teacher's.

    ``cached=True``: another teacher's speech estimates were computed beforehand (a peer or
    an ensemble, :mod:`wildmix.teachers`) and come with the batch, ``[recording, estimate]``
    (then the pair, if any): the noise is the recording minus the estimate, and ``teacher``
    only started the student (keep it frozen).
    """

    def __init__(self, teacher: torch.nn.Module, update: str = "ema", momentum: float = 0.9,
                 every: str = "epoch", seed: int = 0, loss: str = "snr",
                 snr_max: float = 30.0, cached: bool = False):
        self.teacher = teacher.requires_grad_(False)
        self.cached = cached
        self.update, self.momentum, self.every, self.seed = update, momentum, every, seed
        self.loss_name, self.snr_max = loss, snr_max
        self.interval = 1

    def start(self, model, state, epoch_steps):
        if state and "teacher" in state:
            self.teacher.load_state_dict(state["teacher"])
        elif state is None:
            model.load_state_dict(self.teacher.state_dict())  # the student starts as teacher
        self.interval = interval_steps(self.every, epoch_steps)
        log.info("RemixIT: teacher update %s every %d steps", self.update, self.interval)

    @torch.no_grad()
    def targets(self, noisy: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher's ``speech (B, T)`` and permuted ``noise (B, T)`` of ``noisy (B, T)``."""
        self.teacher.eval()
        est = self.teacher(noisy).float()  # (B, M, T)
        speech, noise = est[:, 0], est[:, 1:].sum(1)
        return speech, noise[derangement(len(noisy), self.seed, step, noisy.device)]

    def loss(self, net, batch, step):
        if self.cached:
            speech, pair = batch[:, 1], batch[:, 2:]
            noise = (batch[:, 0] - speech)[derangement(len(batch), self.seed, step,
                                                       batch.device)]
        else:
            (speech, noise), pair = self.targets(batch[:, 0], step), batch[:, 1:]
        inputs, parts = speech + noise, 1
        if pair.shape[1] == 2:  # and a noisy/clean pair: one forward pass of both
            noisy, clean = pair[:, 0], pair[:, 1]
            inputs, parts = torch.cat([inputs, noisy]), 2
            speech, noise = torch.cat([speech, clean]), torch.cat([noise, noisy - clean])
        estimates = net(inputs).float()  # (parts * B, M, T)
        # the mean over all examples times parts: the sum of the two batch means
        return parts * speech_noise_loss(estimates, speech, noise, self.loss_name,
                                         self.snr_max)

    def after_step(self, model, step):
        if self.update == "frozen" or step % self.interval:
            return
        ema_update(self.teacher, model, self.momentum if self.update == "ema" else 0.0)

    def state_dict(self):
        return {"teacher": self.teacher.state_dict()}


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, momentum: float) -> None:
    """``teacher <- momentum * teacher + (1 - momentum) * student``, parameters and float
    buffers; other buffers (counters) are copied."""
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for key, t in t_state.items():
        s = s_state[key].detach().to(t.device)
        if t.is_floating_point():
            t.mul_(momentum).add_(s.to(t.dtype), alpha=1.0 - momentum)
        else:
            t.copy_(s)


def derangement(n: int, seed: int, step: int, device) -> torch.Tensor:
    """A random permutation of ``n`` items without fixed points (for n > 1), from
    ``(seed, step)``: resumable, and the same on every rank's own batch."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    order = torch.randperm(n, generator=g)
    perm = torch.empty(n, dtype=torch.long)
    perm[order] = order.roll(-1)  # a random cycle through all items
    return perm.to(device)


REGISTRY: dict[str, type[Strategy]] = {"mixit": MixIT, "supervised": Supervised,
                                       "remixit": RemixIT, "pit": PIT}
