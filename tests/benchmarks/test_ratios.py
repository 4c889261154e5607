"""benchmarks/ratios.py pairs each case's roiops median with every other implementation's."""

from ratios import format_table, ratio_rows


def bench(group: str, impl: str, median_s: float, **extra_info) -> dict:
    return {"group": group, "params": {"impl": impl}, "stats": {"median": median_s}, "extra_info": extra_info}


RUN = {
    "datetime": "2026-11-30T22:00:00+00:00",
    "machine_info": {"machine": "x86_64", "torch": "2.14.1", "torchvision": "0.29.1", "torch_threads": 2,
                     "allocator": "kept"},
    "commit_info": {"id": "0123456789abcdef", "dirty": True},
    "benchmarks": [
        bench("nms 1000", "torchvision", 0.010),
        bench("nms 1000", "roiops", 0.001),
        bench("batched_nms", "roiops", 0.002, peak_memory_growth_mib=3.5),
        bench("batched_nms", "per_class", 0.004),
        bench("batched_nms", "offset", 0.006),
        bench("box_iou", "torchvision", 0.5),
    ],
}


def test_every_other_implementation_is_a_row_against_roiops_in_run_order():
    assert ratio_rows(RUN) == [
        ("nms 1000", "torchvision", 0.001, 0.010),
        ("batched_nms", "per_class", 0.002, 0.004),
        ("batched_nms", "offset", 0.002, 0.006),
        ("box_iou", "torchvision", None, 0.5),
    ]


def test_table_gives_milliseconds_speed_up_settings_and_extra_info():
    table = format_table(RUN)
    assert "2 threads, allocator kept, commit 0123456789 (dirty)" in table.splitlines()[0]
    assert "| nms 1000 | torchvision | 1.000 | 10.000 | 10.0x |" in table
    assert "| batched_nms | offset | 2.000 | 6.000 | 3.0x |" in table
    assert "| box_iou | torchvision | - | 500.000 | - |" in table
    assert "- batched_nms, roiops: peak_memory_growth_mib = 3.5" in table
