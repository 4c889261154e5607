"""`make bench`: runs every benchmarks/bench_*.py in its own process, passing the arguments on.

Each script prints a markdown table (roiops vs torchvision, same process) and writes
benchmarks/results/<topic>.json.
"""

import glob
import os
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
failed = []
for script in sorted(glob.glob(os.path.join(here, "bench_*.py"))):
    rc = subprocess.call([sys.executable, script, *sys.argv[1:]], cwd=here)
    if rc != 0:
        failed.append(os.path.basename(script))
if failed:
    sys.exit(f"benchmarks failed: {', '.join(failed)}")
