"""The one place the viewer imports the timeline index from (docs/viewer-design.md), so that
swapping the stand-in for the native fasttrace._calltree is a one-line change."""

from __future__ import annotations

from fasttrace.viewer._standin import CallTree, Index

__all__ = ["CallTree", "Index"]
