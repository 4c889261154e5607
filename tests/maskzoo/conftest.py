"""maskzoo test fixtures.

TEMPORARY: until the roiops branches that provide nms/batched_nms, roi_align, MultiScaleRoIAlign
and paste_masks are merged, the ops missing from roiops are filled in from torchvision for the
maskzoo tests only (maskzoo itself always calls roiops.<op>). Every shim is listed in
``SHIMMED`` and announced in the test session header; delete this block once roiops has them all.
"""

import pytest
import torch

import roiops

SHIMMED: list[str] = []


def _install_torchvision_shims() -> None:
    import torchvision
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    class _MultiScaleRoIAlign(torchvision.ops.MultiScaleRoIAlign):
        def __init__(self, featmap_names, output_size, sampling_ratio, *, aligned=False, **kwargs):
            if aligned:
                raise NotImplementedError("torchvision's MultiScaleRoIAlign shim has aligned=False only")
            super().__init__(featmap_names, output_size, sampling_ratio, **kwargs)

    def _paste_masks(masks, boxes, image_shape, threshold=None, padding=1):
        out = paste_masks_in_image(masks[:, None], boxes, image_shape, padding=padding)[:, 0]
        return out if threshold is None else out > threshold

    shims = {
        "nms": torchvision.ops.nms,
        "batched_nms": torchvision.ops.batched_nms,
        "roi_align": torchvision.ops.roi_align,
        "MultiScaleRoIAlign": _MultiScaleRoIAlign,
        "paste_masks": _paste_masks,
    }
    for name, fn in shims.items():
        if not hasattr(roiops, name):
            setattr(roiops, name, fn)
            SHIMMED.append(name)


_install_torchvision_shims()


def pytest_report_header(config):
    if SHIMMED:
        return f"maskzoo tests: roiops ops shimmed from torchvision (not merged yet): {', '.join(SHIMMED)}"
    return None


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
