"""Training helpers: parameter EMA and a cosine learning-rate schedule with linear warm-up."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


class EMA:
    """Exponential moving average of a model's parameters (buffers are copied, e.g. the normaliser).

    ``ema.model`` is a frozen deep copy to evaluate/save. The effective decay warms up as
    ``min(decay, (1 + n) / (10 + n))`` after n updates, so early averages are not dominated by the init.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay={decay} must be in [0, 1)")
        self.source = model
        self.decay = float(decay)
        self.n_updates = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.n_updates) / (10.0 + self.n_updates))

    @torch.no_grad()
    def update(self) -> None:
        d = self.current_decay()
        for e, p in zip(self.model.parameters(), self.source.parameters()):
            e.lerp_(p.detach(), 1.0 - d)
        for e, b in zip(self.model.buffers(), self.source.buffers()):
            e.copy_(b)
        self.n_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the averaged weights into ``model`` (e.g. before saving the final checkpoint)."""
        model.load_state_dict(self.model.state_dict())

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "n_updates": self.n_updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.n_updates = int(state["n_updates"])
        self.decay = float(state["decay"])


def cosine_with_warmup(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                       min_lr_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """LR multiplier: linear 0 -> 1 over ``warmup_steps``, then cosine 1 -> ``min_lr_ratio`` at ``total_steps``."""
    if total_steps < 1 or warmup_steps < 0:
        raise ValueError(f"need total_steps >= 1 and warmup_steps >= 0; got {total_steps}, {warmup_steps}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
