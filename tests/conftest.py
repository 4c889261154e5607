"""Shared test fixtures: the device parameter and hypothesis profiles.

Profiles: ``dev`` (quick, random) for local iteration, ``ci`` (derandomized, more examples) for
``make test`` and CI, ``thorough`` (20x ci's examples, random) for a sweep before landing. Select
with ``--hypothesis-profile=NAME``; ``--hypothesis-seed=N`` picks the draw of the random ones.
"""

import os
import shutil
import tempfile

import pytest
import torch
from hypothesis import HealthCheck, settings

# Property tests run whole kernels: no per-example deadline, and large drawn maps are expected.
UNTIMED = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", max_examples=15, **UNTIMED)
settings.register_profile("ci", max_examples=40, derandomize=True, print_blob=True, **UNTIMED)
# 20x ci's examples from a fresh random draw each run and no example database: the sweep to run
# once before landing a change to a kernel or a strategy (`make test-thorough`), so that no test
# passes only by the luck of ci's fixed draw.
settings.register_profile("thorough", max_examples=800, database=None, print_blob=True, **UNTIMED)
settings.load_profile("dev")

# CUDA is always a parameter, marked like every CUDA test: collected everywhere (so `-m cuda` selects
# the same tests on any machine), skipped by the hook below where there is no GPU.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def pytest_configure(config):
    # Inductor (torch.compile, AOTInductor) builds into one cache under the temp folder and never
    # deletes it: a run of this suite leaves 0.6 GB there (the AOTInductor test's model library is
    # 350 MB), and a machine that runs the suite again and again fills its disk. Unless the caller
    # chose a cache, each run gets its own, removed when the run ends.
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        config._inductor_cache = tempfile.mkdtemp(prefix="roiops-tests-inductor-")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = config._inductor_cache


def pytest_unconfigure(config):
    cache = getattr(config, "_inductor_cache", None)
    if cache is not None:
        shutil.rmtree(cache, ignore_errors=True)
        os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        # The marker, not item.keywords: keywords also hold directory names (a checkout named "cuda").
        if item.get_closest_marker("cuda") is not None and not torch.cuda.is_available():
            item.add_marker(skip_cuda)


@pytest.fixture(params=DEVICES)
def device(request):
    """'cpu', and 'cuda' (marked ``cuda``: skipped without a GPU)."""
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
