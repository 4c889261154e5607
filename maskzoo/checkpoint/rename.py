"""Auditable renaming of a state_dict: rules grouped per component, strict bookkeeping.

A :class:`RenameRule` maps source keys matching a regular expression (full match) to a target key
(``re`` replacement template). :func:`apply_rules` renames a whole state_dict and proves that the
mapping is a bijection onto the target model's keys:

- every source key is matched by exactly one rule (none: "unused source key"; several: ambiguous);
- no two source keys land on the same target key (collision);
- every target key is filled, and every filled key has the target's shape.

Anything else is a :class:`~maskzoo.checkpoint.errors.CheckpointError` listing every problem at once.
There is deliberately no suffix matching and no "ignore mismatched" mode: a checkpoint either maps
exactly or does not load.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from maskzoo.checkpoint.errors import CheckpointError, listed


@dataclass(frozen=True)
class RenameRule:
    component: str  # what the rule covers, for messages ("backbone stem", "mask predictor", ...)
    pattern: str  # regular expression, must match the whole source key
    replacement: str  # re.sub template giving the target key; None-like "" means "drop this key"

    def target(self, key: str) -> str | None:
        match = re.fullmatch(self.pattern, key)
        return None if match is None else match.expand(self.replacement)


def apply_rules(
    source: Mapping[str, torch.Tensor],
    rules: Iterable[RenameRule],
    target_shapes: Mapping[str, torch.Size],
    what: str,
) -> dict[str, torch.Tensor]:
    """Renames ``source`` by ``rules`` onto the keys of ``target_shapes``, strictly.

    A rule whose replacement is ``""`` drops the keys it matches (a logged, deliberate surgery such
    as a classifier's ``fc`` when only the backbone is wanted); the caller reports those.

    Returns:
        The renamed state_dict (same tensors, new names), covering ``target_shapes`` exactly.

    Raises:
        CheckpointError: naming ``what`` and listing every unmatched source key, ambiguous match,
            collision, unfilled target key and shape mismatch.
    """
    rules = list(rules)
    renamed: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    unmatched, ambiguous, collisions = [], [], []
    for key, tensor in source.items():
        hits = [(rule, t) for rule in rules if (t := rule.target(key)) is not None]
        if not hits:
            unmatched.append(key)
            continue
        if len(hits) > 1:
            ambiguous.append(f"{key} ({' / '.join(r.component for r, _ in hits)})")
            continue
        target = hits[0][1]
        if target == "":
            continue
        if target in renamed:
            collisions.append(f"{origin[target]} and {key} -> {target}")
            continue
        renamed[target] = tensor
        origin[target] = key
    unknown = sorted(f"{origin[k]} -> {k}" for k in renamed if k not in target_shapes)
    unfilled = sorted(k for k in target_shapes if k not in renamed)
    mismatched = sorted(
        f"{origin[k]} -> {k}: file {tuple(renamed[k].shape)} vs model {tuple(target_shapes[k])}"
        for k in renamed
        if k in target_shapes and renamed[k].shape != target_shapes[k]
    )
    problems = []
    for label, items in (
        ("source key(s) no rule maps", unmatched),
        ("source key(s) several rules map", ambiguous),
        ("collision(s)", collisions),
        ("renamed key(s) the model does not have", unknown),
        ("model key(s) left unfilled", unfilled),
        ("shape mismatch(es)", mismatched),
    ):
        if items:
            problems.append(f"{len(items)} {label}: {listed(items)}")
    if problems:
        raise CheckpointError(f"{what} does not map onto the model:\n  " + "\n  ".join(problems))
    return renamed
