"""Atomic file writes for reports: a thin layer over :mod:`fsio`, the project's one implementation."""

from pathlib import Path

import fsio

__all__ = ["write_text_atomic"]


def write_text_atomic(path: Path, text: str) -> Path:
    """Replace ``path`` with ``text`` atomically (see :func:`fsio.write_text_atomic`), creating missing parent
    directories as this function always has; returns ``path``."""
    return fsio.write_text_atomic(path, text, mkdir=True)
