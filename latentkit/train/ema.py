"""Exponential moving average of model weights (the EMA is what gets exported)."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """Keeps ``shadow = decay * shadow + (1 - decay) * weights`` in fp32, with a warm-up so early steps
    (or the first steps after a restart) are not dominated by the initial weights."""

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: int = 100):
        self.decay, self.warmup, self.updates = decay, warmup, 0
        self.shadow = {k: v.detach().float().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (self.warmup + self.updates))
        shadow, new = [], []
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                shadow.append(self.shadow[k])
                new.append(v.detach().float())
            else:
                self.shadow[k].copy_(v)
        torch._foreach_lerp_(shadow, new, 1 - d)  # one fused update: s + (1 - d) (v - s) = d s + (1 - d) v

    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict(self.shadow)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "warmup": self.warmup, "updates": self.updates}

    def load_state_dict(self, state: dict, shadow: dict[str, torch.Tensor]) -> None:
        self.decay, self.warmup, self.updates = state["decay"], state["warmup"], state["updates"]
        self.shadow = {k: v.to(self.shadow[k].device, torch.float32).clone() for k, v in shadow.items()}
