"""Autograd formulas of the differentiable roiops ops (torch.library.register_autograd).

Every op a backward calls is itself a registered op with a fake kernel, so gradients trace under
torch.compile and torch.export too.
"""
