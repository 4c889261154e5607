"""csrc/mutations.toml stays in step with the tree: `make mutate` runs rarely (tens of minutes), so
a kernel edit that moves a planted bug's `find` text must fail here, in every test run, rather
than break the mutation check unseen."""

import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _mutate_tool():
    spec = importlib.util.spec_from_file_location("mutate", os.path.join(ROOT, "tools", "mutate.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_planted_bug_applies_to_the_tree_exactly_once():
    mutate = _mutate_tool()
    mutants = mutate.load_mutants(mutate.ROOT)  # SystemExit naming each mutant out of step
    assert mutants, "no mutants read"
    for m in mutants:
        assert all(os.path.isfile(os.path.join(ROOT, t.split("::")[0])) for t in m.tests), m.id
