"""The benchmark helpers live in benchmarks/, which is not a package: put it on the import path."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "benchmarks"))
