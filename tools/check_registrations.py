"""Loads a CUDA build of roiops._C and fails unless every roiops op with a CPU kernel also has a
CUDA kernel. Works without a GPU: registration happens at load time, no kernel runs."""

import sys

import torch


def main(path: str) -> int:
    torch.ops.load_library(path)
    registered = torch._C._dispatch_get_registrations_for_dispatch_key
    cpu, cuda = ({n for n in registered(key) if n.startswith("roiops::")} for key in ("CPU", "CUDA"))
    missing = sorted(cpu - cuda)
    print(f"cuda-check: {len(cuda)} roiops ops have CUDA kernels: {', '.join(sorted(cuda))}")
    if not cpu:
        print("cuda-check: no roiops CPU kernels found in the build", file=sys.stderr)
        return 1
    if missing:
        print(f"cuda-check: ops with a CPU kernel but no CUDA kernel: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: check_registrations.py PATH_TO_roiops_C.so")
    sys.exit(main(sys.argv[1]))
