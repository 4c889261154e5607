"""Shared test fixtures: the device parameter and hypothesis profiles.

Profiles: ``dev`` (quick, random) for local iteration, ``ci`` (derandomized, more examples) for
``make test`` and CI. Select with ``--hypothesis-profile=NAME``.
"""

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "dev",
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "ci",
    max_examples=40,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("dev")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        # The marker, not item.keywords: keywords also hold directory names (a checkout named "cuda").
        if item.get_closest_marker("cuda") is not None and not torch.cuda.is_available():
            item.add_marker(skip_cuda)


@pytest.fixture(params=DEVICES)
def device(request):
    """Every device this machine has: 'cpu', plus 'cuda' when a GPU and the CUDA kernels exist."""
    return torch.device(request.param)


# --- maskzoo data/engine fixtures -----------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_shapes_config():
    """A shapes generator config for 64 x 64 images with 1-3 small shapes (fast to write and train on)."""
    from maskzoo.data.shapes import ShapesConfig

    return ShapesConfig(image_size=64, min_shapes=1, max_shapes=3, min_radius=8.0, max_radius=20.0,
                        min_visible_pixels=16)


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory, tiny_shapes_config):
    """A 6-train / 3-val shapes set of 64 x 64 images: {"root", "train", "val"} (JSON paths)."""
    from maskzoo.data.shapes import write_dataset

    root = tmp_path_factory.mktemp("shapes")
    paths = write_dataset(root, train=6, val=3, seed=3, cfg=tiny_shapes_config)
    return {"root": root, **paths}
