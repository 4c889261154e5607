"""The error every checkpoint reader raises, and the one way its messages list names."""

from __future__ import annotations

__all__ = ["CheckpointError", "listed"]

# Messages name at most this many keys per problem; the rest is counted.
_MAX_LISTED = 12


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded: unreadable, not ours, or not matching the model."""


def listed(items: list[str]) -> str:
    """``items`` joined by commas, cut after a dozen with a count of the rest."""
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f", ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")
