"""Fixtures of the roiops tests (the device parameter is in tests/conftest.py)."""

import pytest
import torch


@pytest.fixture
def deterministic():
    """torch.use_deterministic_algorithms(True) for the test, restored afterwards."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)
