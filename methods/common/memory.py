"""Memory a network's forward pass holds, counted without running it (for memory estimates)."""

from __future__ import annotations

import copy

import torch


def activation_bytes(module: torch.nn.Module, inputs: tuple, itemsize: int) -> float:
    """Sum of the outputs of every leaf module of one forward pass (bytes at ``itemsize``),
    computed on the meta device (no memory, no arithmetic): an upper bound on what a forward
    pass holds at once, and about what autograd keeps for the backward pass."""
    total = 0

    def hook(_module, _inputs, output):
        nonlocal total
        for out in output if isinstance(output, tuple | list) else (output,):
            if isinstance(out, torch.Tensor):
                total += out.numel() * itemsize

    module = copy.deepcopy(module).to("meta")
    handles = [m.register_forward_hook(hook) for m in module.modules()
               if not list(m.children())]
    with torch.no_grad():
        module(*[x.to("meta") if isinstance(x, torch.Tensor) else x for x in inputs])
    for h in handles:
        h.remove()
    return float(total)


def parameter_bytes(module: torch.nn.Module, itemsize: int) -> float:
    """Bytes of ``module``'s parameters at ``itemsize`` bytes per number."""
    return float(sum(p.numel() for p in module.parameters()) * itemsize)
