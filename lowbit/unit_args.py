"""Building a unit's parameter object from command-line arguments (shared by ``lowbit verilog`` and ``lowbit synth``).

The common flags (``--lanes``, ``--rows``, ``--max-k``, ``--tree-stages``, ``--act-bits``, ``--acc-width``) and any
number of ``--param key=value`` for the unit's other fields; the parameter class refuses unknown keys and bad
values with a message naming them.
"""

from dataclasses import MISSING, fields

__all__ = ["COMMON_FLAGS", "add_unit_arguments", "build_params", "params_from_args", "parse_param_value"]

#: Common flags → parameter field names (used only when the user gives them).
COMMON_FLAGS = {
    "lanes": "lanes",
    "rows": "rows",
    "max_k": "max_k",
    "tree_stages": "tree_stages",
    "act_bits": "act_bits",
    "acc_width": "acc_width",
}


def parse_param_value(text: str):
    """A ``--param`` value: ``none``/``null`` → None, ``true``/``false`` → bool, integers (decimal, ``0x``,
    ``0b``), floats, else the string itself; the parameter class decides whether the type is right."""
    low = text.strip().lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    for base in (10, 0):
        try:
            return int(text, base)
        except ValueError:
            pass
    try:
        return float(text)
    except ValueError:
        return text


def build_params(unit: str, common: dict, params: list[str]):
    """The unit's parameter object from the common flag values (``None`` = not given) and ``key=value`` strings.

    Raises ``ValueError``/``TypeError`` naming the offending value: an unknown unit or one without a
    generator, a malformed or repeated ``--param``, a required field left out, or whatever the parameter
    class refuses (unknown keys, out-of-range values).
    """
    from hw.params import params_for_unit

    cls = params_for_unit(unit)
    given: dict[str, tuple[str, object]] = {}     # field → (how it was given, value)
    for flag, name in COMMON_FLAGS.items():
        raw = common.get(flag)
        if raw is not None:
            given[name] = (f"--{flag.replace('_', '-')} {raw}", parse_param_value(str(raw)))
    for item in params:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"--param expects KEY=VALUE, got {item!r}")
        if key in given:
            raise ValueError(f"parameter {key!r} given twice ({given[key][0]} and --param {item})")
        given[key] = (f"--param {item}", parse_param_value(raw))
    names = {f.name for f in fields(cls)}
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    missing = [n for n in required if n not in given]
    if missing and not (set(given) - names):      # unknown keys get the class's own error first
        how = ", ".join(f"--{n.replace('_', '-')}" if n in COMMON_FLAGS.values() else f"--param {n}=..."
                        for n in missing)
        raise ValueError(f"unit {unit!r} needs {', '.join(repr(n) for n in missing)} ({how})")
    return cls.from_dict({k: v for k, (_, v) in given.items()})



def add_unit_arguments(p) -> None:
    """The unit positional, the common flags and ``--param`` on an argparse parser."""
    from hw.params import UNIT_PARAMS

    units = ", ".join(k.value for k in UNIT_PARAMS)
    p.add_argument("unit", help=f"unit ({units}), or `accelerator` (lowbit verilog: the whole accelerator of "
                                f"--design)")
    # Values stay strings here: the unit's parameter class validates them and names the bad value.
    p.add_argument("--lanes", help="reduction elements per cycle")
    p.add_argument("--rows", help="outputs computed in parallel")
    p.add_argument("--max-k", dest="max_k", help="longest reduction (sizes the accumulators)")
    p.add_argument("--tree-stages", dest="tree_stages", help="register stages in each adder tree")
    p.add_argument("--act-bits", dest="act_bits", help="activation width")
    p.add_argument("--acc-width", dest="acc_width", help="accumulator width")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="any other field of the unit's parameter class (repeatable; see docs/units.md)")


def params_from_args(args):
    return build_params(args.unit, {flag: getattr(args, flag) for flag in COMMON_FLAGS}, args.param)
