"""Input checks shared by every entry point: refuse bad tensors up front, naming the offending value."""

import numpy as np

__all__ = ["check_finite", "check_matrix", "check_positive_int"]


def check_positive_int(name: str, value) -> int:
    """Return ``value`` if it is a positive integer (bools and integral floats refused), else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive integer, not {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return int(value)


def check_finite(name: str, array) -> None:
    """Raise if ``array`` (tensor or ndarray) holds NaN or ±Inf, saying how many and where the first is."""
    # A tensor is recognised by duck typing, so this module (imported by the simulator and the CLI) needs no torch.
    values = array.detach().cpu().numpy() if hasattr(array, "detach") else np.asarray(array)
    if not np.issubdtype(values.dtype, np.floating):
        return
    bad = ~np.isfinite(values)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} contains {int(bad.sum())} non-finite value(s); the first is {float(values[first])} "
            f"at index {first}"
        )


def check_matrix(name: str, array, *, columns: int | None = None) -> None:
    """Raise unless ``array`` is 2-D and non-empty (and has ``columns`` columns when given)."""
    shape = tuple(array.shape)
    if len(shape) != 2:
        raise ValueError(f"{name} must be a 2-D matrix, but has shape {shape}")
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"{name} must not be empty, but has shape {shape}")
    if columns is not None and shape[1] != columns:
        raise ValueError(f"{name} has {shape[1]} columns (shape {shape}) but {columns} are needed")
