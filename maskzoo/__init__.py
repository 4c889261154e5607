"""maskzoo: Mask R-CNN and Keypoint R-CNN built on roiops."""

__version__ = "0.1.0"
