"""The one place the viewer imports the timeline index from (docs/viewer-design.md)."""

from __future__ import annotations

from fasttrace._calltree import CallTree
from fasttrace._timeline import DEFAULT_BUDGET, Index

__all__ = ["CallTree", "DEFAULT_BUDGET", "Index"]
