"""maskzoo checkpoints: self-describing safetensors files, and converters from torchvision's files.

- :mod:`maskzoo.checkpoint.io`: ``save(model, path)`` / ``load(path)`` (one safetensors file that
  holds the weights and the model's complete config in its metadata; atomic writes; strict,
  explained loading).
- :mod:`maskzoo.checkpoint.torchvision`: torchvision's detection and ImageNet classification files
  renamed onto maskzoo's module tree, with strict key and shape checks.
- :mod:`maskzoo.checkpoint.rename`: the auditable rename-rule machinery both use.
"""

from maskzoo.checkpoint.io import CheckpointError, load, read_header, save

__all__ = ["CheckpointError", "load", "read_header", "save"]


def build_with_checkpoint(name: str, checkpoint, **overrides):
    """``maskzoo.build(name, checkpoint=path, **overrides)``: the model, filled from a file.

    The file is recognised by its content, not its name:

    - a maskzoo checkpoint (safetensors): must hold model ``name``; its stored config is used, with
      ``overrides`` applied on top;
    - a torchvision detector file (``maskrcnn_resnet50_fpn``, ``keypointrcnn_resnet50_fpn``, R101 /
      X101 resnet_fpn_backbone layouts): converted on load (:mod:`maskzoo.checkpoint.torchvision`);
    - a torchvision ImageNet ResNet classifier: fills the backbone trunk only.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is unreadable, of another model, or its tensors do not match
            (every missing/unexpected key and shape mismatch listed).
    """
    import os

    from maskzoo.checkpoint import io
    from maskzoo.checkpoint import torchvision as tv

    path = os.fspath(checkpoint)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    if io.is_safetensors(path):
        header = io.read_header(path)
        if header.config.name != name:
            raise CheckpointError(f"checkpoint {path!r} holds model {header.config.name!r}, not {name!r}")
        return io.load(path, **overrides)
    return tv.build_from_torchvision(path, name, **overrides)
