"""Random frozen batch norms: what the model benchmark and maskzoo's fusion tests both need.

A freshly built frozen batch norm is the identity (weight 1, bias 0, mean 0, variance 1), so a
model compared with its fused copy, or with torchvision's, would compare nothing of the norms.
Importable from a benchmark script (``benchmarks/`` is the script's folder) and from the tests
(``benchmarks._frozen_norms``: the repository root is on pytest's path).
"""

import torch


def randomize_frozen_norms(module: torch.nn.Module, norm_type: type, seed: int) -> torch.nn.Module:
    """Fills every ``norm_type`` layer of ``module`` with random, well-conditioned statistics.

    Per channel: weight in [0.5, 1), bias ~ N(0, 0.1^2), running_mean ~ N(0, 0.1^2), running_var
    in [0.5, 1.5) (away from 0, so eps = 0 stays finite). Drawn from a generator seeded with
    ``seed``, layer by layer in ``module.modules()`` order: the same seed gives the same values.
    Returns ``module`` (changed in place).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, norm_type):
                c = m.weight.numel()
                m.weight.copy_(0.5 + 0.5 * torch.rand(c, generator=g))
                m.bias.copy_(0.1 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
    return module
