"""pytest plugin for tools/gpu_check.sh (``-p gpu_check_pytest`` with tools/ on PYTHONPATH).

1. Tests parametrised with a CUDA device (the ``device`` fixture's "cuda" parameter, or any
   parameter named ``device`` whose value starts with "cuda") get the ``cuda`` marker, so that
   ``-m cuda`` selects them along with the tests marked by hand.
2. The kernel tests run first and the model-level tests (tests/maskzoo) last, so that when time
   runs out it is the few expensive model tests that are cut, not the many kernel tests.
3. GPU_CHECK_PYTEST_SECONDS=N: once N seconds have passed, the session stops after the test that
   is running (pytest's own shouldstop), so that the summary and the junit XML are still written
   when time runs out; the outer ``timeout`` of gpu_check.sh is only the backstop for a hang.
"""

import os
import time

import pytest

_START = time.monotonic()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        callspec = getattr(item, "callspec", None)
        device = None if callspec is None else callspec.params.get("device")
        if device is not None and str(device).startswith("cuda") and item.get_closest_marker("cuda") is None:
            item.add_marker(pytest.mark.cuda)

    def model_level(item) -> bool:
        try:
            return "maskzoo" in item.path.relative_to(config.rootpath).parts
        except ValueError:  # a test outside the root directory
            return False

    items.sort(key=model_level)  # stable: the order within each group stays


def pytest_runtest_teardown(item, nextitem):
    limit = os.environ.get("GPU_CHECK_PYTEST_SECONDS")
    if limit and nextitem is not None and time.monotonic() - _START > float(limit):
        item.session.shouldstop = (
            f"gpu_check: the tests' time limit ({limit} s) was reached; "
            f"the tests after {item.nodeid} did not run"
        )
