"""Adam for SVI with one torch optimizer for all parameters.

`pyro.optim.Adam` keeps one `torch.optim.Adam` per parameter and steps them one by one; with the
68 parameter tensors of a HyperVAE that Python loop cost about a fifth of a training step on the
CPU. This optimizer has the same interface and the same per-parameter state format (so
checkpoints written with `pyro.optim.Adam` load), but steps every parameter in one fused update
(`fused=True`: one vectorised kernel per tensor, on the CPU too; for the HyperVAE's 1.27 million
parameters 1.2 ms a step against 2.9 ms for the multi-tensor `foreach` update and 3.6 ms for
torch's default, on 2 cores). Parameters without a gradient this step (MetaVAE's other
decoders) are left alone, moments and all, as `torch.optim.Adam` does.
"""

from __future__ import annotations

import pyro
import torch
from pyro.optim import PyroOptim


class Adam(PyroOptim):
    def __init__(self, optim_args: dict):
        super().__init__(torch.optim.Adam, optim_args)
        self.optim_args = dict(optim_args)
        self.torch_optim: torch.optim.Adam | None = None
        self.names: dict[torch.Tensor, str] = {}

    def __call__(self, params, *args, **kwargs) -> None:
        new = [p for p in params if p not in self.names]
        if new:
            if self.torch_optim is None:
                self.torch_optim = torch.optim.Adam(new, **{"fused": True, **self.optim_args})
            else:
                self.torch_optim.add_param_group({"params": new, "lr": self.optim_args["lr"]})
            store = pyro.get_param_store()
            for p in new:
                name = self.names[p] = store.param_name(p)
                saved = self._state_waiting_to_be_consumed.pop(name, None)
                if saved is not None:  # a per-parameter torch Adam state dict
                    # The fused update wants every state tensor, the step count too, on the
                    # parameter's device (torch's own `load_state_dict` moves them the same way).
                    self.torch_optim.state[p] = {
                        k: _on(p, k, v) for k, v in saved["state"].get(0, {}).items()
                    }
        self.torch_optim.step()

    def set_lr(self, lr: float) -> None:
        """The learning rate of the next steps, for every parameter (those not seen yet too)."""
        self.optim_args["lr"] = lr
        if self.torch_optim is not None:
            for group in self.torch_optim.param_groups:
                group["lr"] = lr

    def get_state(self) -> dict:
        state = dict(self._state_waiting_to_be_consumed)  # loaded, not yet stepped
        if self.torch_optim is None:
            return state
        group_args = dict(self.torch_optim.defaults)
        for p, name in self.names.items():
            per_param = self.torch_optim.state.get(p, {})
            state[name] = {"state": {0: dict(per_param)} if per_param else {},
                           "param_groups": [dict(group_args, params=[0])]}
        return state


def _on(p: torch.Tensor, key: str, value):
    if key == "step":
        return torch.as_tensor(value, dtype=torch.float32, device=p.device)
    return value.to(p.device) if torch.is_tensor(value) else value
