"""maskzoo test fixtures. The tests mirror the package: modeling/, checkpoint/, data/, engine/, and
top-level files for the modules at the package's top (config and zoo, CLI, demo, drawing). Helpers
live beside the tests that use them (_torchvision_oracle.py, _torchvision_models.py, standin_*.py):
a test's own folder is on sys.path in pytest's default import mode."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
