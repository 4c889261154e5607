"""The timing helper of the benchmark scripts measures what it says it measures."""

import torch
from _common import median_ms


def test_median_ms_runs_under_the_callers_thread_count():
    seen = set()
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        median_ms(lambda: seen.add(torch.get_num_threads()), min_run_time=0.01)
    finally:
        torch.set_num_threads(before)
    assert seen == {2}
