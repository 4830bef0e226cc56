"""The unit parameter classes under their historical import path; they live in :mod:`hw.units` (one module per
unit, plus the shared base, channels and stream protocol)."""

from .units import *  # noqa: F401,F403
from .units import __all__  # noqa: F401
from .units.base import _choice, _in_range, _in_set, _int_field  # noqa: F401  (used by hw.accelerator's checks)
