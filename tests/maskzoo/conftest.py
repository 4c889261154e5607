"""maskzoo test fixtures. Helpers shared by the tests live in _torchvision_oracle.py (this directory
is on sys.path in pytest's default import mode)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
