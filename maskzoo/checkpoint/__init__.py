"""Every file format maskzoo reads or writes for a model.

- :mod:`maskzoo.checkpoint.io`: the model file, ``save(model, path)`` (one safetensors file that
  holds the weights and the model's complete config in its metadata; strict, explained loading).
- :mod:`maskzoo.checkpoint.training`: the training state that ``maskzoo train --resume`` continues from.
- foreign layouts, one module per source, each a table of rename rules plus its conventions:
  :mod:`maskzoo.checkpoint.torchvision` (detectors and ImageNet ResNets), on the machinery of
  :mod:`maskzoo.checkpoint.rename`.
- :mod:`maskzoo.checkpoint.loader`: ``load(path)``, the one loader that recognises all of them.
"""

from maskzoo.checkpoint.errors import CheckpointError
from maskzoo.checkpoint.io import read_header, save
from maskzoo.checkpoint.loader import load

__all__ = ["CheckpointError", "load", "read_header", "save"]
