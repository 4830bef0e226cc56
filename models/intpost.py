"""Integer post-processing: the normative semantics of the ``POST`` instruction's functions (docs/isa.md §3).

Every function here is the definition its instruction implements: plain NumPy on int64, exact, no floating point.
The simulator calls them by name through :data:`FUNCTIONS`; ``models.intpath`` calls them to build each scheme's
integer-only deployment path. ``docs/intpost.md`` is generated from these docstrings.

**Calling convention** (one for every function, mirroring the instruction's operands)::

    f(src, aux=None, *, imm=0, shift=0, options=0, out="I32", inp="I32", word=0) -> int64 array

* ``src`` — the source region as the instruction reads it: a matrix ``x[rows][cols]`` or the records of a
  ``MATMUL`` ``rec[rows][cols][words]`` (``rows`` = tokens, ``cols`` = output rows of the matmul); functions that
  read one value per element take record word ``word`` (POST ``a0`` bits 24–31). ``combine`` and
  ``combine_rows`` read every word, and with ``blocks`` > 1 the records of several runs
  ``rec[blocks][rows][cols][words]`` (BiLLM's 128-column blocks), one region after the other.
* ``aux`` — the auxiliary region (``a3``) as a flat, C-ordered array of int32 values; each function documents its
  layout (``aux_layout`` returns it as data, ``pack_aux`` builds it).
* ``imm`` — ``a5``, a signed 32-bit immediate; ``shift`` — ``a6`` bits 0–7; ``options`` — ``a6`` bits 8–31.
* ``out`` / ``inp`` — the output and input formats (``I8``, ``I16``, ``I32``, ``B1``; ``a0`` bits 8–11 and
  12–15). Inputs are checked to lie in their format; outputs **saturate** to theirs (``B1`` holds 0/1).

**Rounding** — one rule for the whole module: :func:`round_shift` ``(x, s)`` is ``x / 2^s`` rounded to the
nearest integer, **ties to even** (and :func:`round_div` the same for a quotient). Why: it is ``torch.round``'s
rule, which every scheme's reference quantizer uses (BitNet b1.58's per-token absmax, TernaryBERT's symmetric
quantizer, the int8 baseline; ../shared/docs/quantization.md §0 asks the hardware rounder to match), so one rule
covers the host and the post-processing unit and an integer requantization lands on the reference's code at an
exact tie; it is unbiased, so repeated rescaling does not drift; and in hardware it costs, over round-half-up, an
OR of the dropped bits below the half bit and an AND with the result's LSB. gemmlowp's ``RoundingDivideByPOT``
rounds ties away from zero instead: the two differ exactly at ties (``2.5 → 2`` here, ``3`` there;
``-2.5 → -2`` here, ``-3`` there). Against ``torch.round`` the rule is the same —
``round_shift(x, s) == torch.round(x / 2**s)`` in float64 for ``|x| < 2^53`` — and what differs is the operand:
the float reference rounds a float32 product (``x·s`` with ``s`` itself rounded), this module the exact rational,
so a value within float32 error of a ``.5`` boundary can land one code apart.

**Widths** — every intermediate is a signed 64-bit integer. Each function bounds its worst case from the actual
operand magnitudes (Python integers, exact) and refuses, with :class:`IntPostOverflow`, any call whose
intermediate could reach ``2^62``; the bound of each function is in its docstring.

**Fixed point** — a value ``v`` with ``frac`` fractional bits stands for ``v·2^-frac``. The host boundary is
:func:`to_float` and :func:`from_float`; :func:`fixed_point` turns a positive real scale into a multiplier and a
shift (gemmlowp's ``QuantizeMultiplier``), :func:`fixed_point_array` a vector of reals into integers with one
shared ``frac``.
"""

import math

import numpy as np

__all__ = ["FORMATS", "IntPostOverflow", "round_shift", "round_div", "saturate", "format_range", "to_float",
           "from_float", "fixed_point", "fixed_point_array", "silu_table", "aux_layout", "pack_aux",
           "combine", "combine_rows", "threshold", "compare", "absmax", "quantize", "requant", "add", "mul",
           "relu", "relu2", "silu", "FUNCTIONS", "OPT_GE", "INTERMEDIATE_BITS"]

#: Element formats of a POST operand and their value ranges (docs/isa.md §2; ``B1`` as 0/1).
FORMATS = {"I8": (-(1 << 7), (1 << 7) - 1), "I16": (-(1 << 15), (1 << 15) - 1),
           "I32": (-(1 << 31), (1 << 31) - 1), "B1": (0, 1)}
#: Every intermediate is a signed 64-bit integer; operands whose worst case reaches ``2^INTERMEDIATE_BITS`` are
#: refused (one bit of headroom below int64 for the rounding increment and the bias).
INTERMEDIATE_BITS = 62
#: ``threshold`` / ``compare`` option bit 0: ``>=`` instead of ``>``.
OPT_GE = 1
_INT32 = FORMATS["I32"]


class IntPostOverflow(ValueError):
    """A POST call whose intermediate could leave the 64-bit datapath (``2^62`` bound)."""


# -- primitives --------------------------------------------------------------------------------------------

def _as_int(name: str, a) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == np.bool_:
        a = a.astype(np.int64)
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, not {a.dtype}")
    if a.dtype == np.uint64 and a.size and int(a.max()) > np.iinfo(np.int64).max:
        raise IntPostOverflow(f"{name} holds {int(a.max())}, beyond int64")
    return a.astype(np.int64)


def _max_abs(a: np.ndarray) -> int:
    # Python ints: |int64 min| does not fit int64.
    return max(abs(int(a.min())), abs(int(a.max()))) if a.size else 0


def _check_shift(shift) -> int:
    if isinstance(shift, bool) or not isinstance(shift, (int, np.integer)) or not 0 <= shift <= 62:
        raise ValueError(f"shift must be an integer in [0, 62] (a6 bits 0-7; 63+ would shift out every int64 bit), "
                         f"not {shift!r}")
    return int(shift)


def _check_bound(bound: int, what: str) -> None:
    if bound >= 1 << INTERMEDIATE_BITS:
        raise IntPostOverflow(f"{what} can reach {bound} (about 2^{bound.bit_length() - 1}), beyond the 64-bit "
                              f"datapath's 2^{INTERMEDIATE_BITS} bound: narrow the operands or shift earlier")


def round_shift(x, s: int) -> np.ndarray:
    """``x / 2^s`` rounded to nearest, ties to even, for int64 ``x`` and ``0 <= s <= 62`` (exact).

    ``q = x >> s`` (floor), ``r = x − q·2^s`` in ``[0, 2^s)``; ``q + 1`` if ``r > 2^(s−1)`` or
    (``r == 2^(s−1)`` and ``q`` odd). Hand values: ``round_shift([-5, -3, -1, 1, 3, 5], 1) == [-2, -2, 0, 0, 2, 2]``.
    """
    x = _as_int("x", x)
    s = _check_shift(s)
    if s == 0:
        return x.copy()
    q = x >> s
    r = x - (q << s)
    half = np.int64(1 << (s - 1))
    return q + ((r > half) | ((r == half) & ((q & 1) == 1))).astype(np.int64)


def round_div(n, d) -> np.ndarray:
    """``n / d`` rounded to nearest, ties to even, for int64 ``n`` and positive int64 ``d`` (broadcasting; exact).

    ``q = floor(n/d)``, ``r = n − q·d``; ``q + 1`` if ``2r > d`` or (``2r == d`` and ``q`` odd).
    """
    n, d = _as_int("n", n), _as_int("d", d)
    if d.size and int(d.min()) <= 0:
        raise ValueError(f"round_div needs positive divisors, got {int(d.min())}")
    q = np.floor_divide(n, d)
    r2 = 2 * (n - q * d)
    return q + ((r2 > d) | ((r2 == d) & ((q & 1) == 1))).astype(np.int64)


def format_range(fmt: str) -> tuple[int, int]:
    """``(min, max)`` of a POST element format (``I8``, ``I16``, ``I32``, ``B1``)."""
    try:
        return FORMATS[fmt]
    except KeyError:
        raise ValueError(f"unknown POST format {fmt!r}; known: {', '.join(FORMATS)}") from None


def saturate(x, fmt: str) -> np.ndarray:
    """Clamp ``x`` to the range of ``fmt`` (the output stage of every POST function)."""
    lo, hi = format_range(fmt)
    return np.clip(_as_int("x", x), lo, hi)


def _check_in(name: str, a: np.ndarray, fmt: str) -> None:
    lo, hi = format_range(fmt)
    if a.size and (int(a.min()) < lo or int(a.max()) > hi):
        bad = a[(a < lo) | (a > hi)].flat[0]
        raise ValueError(f"{name} holds {int(bad)}, outside its format {fmt} [{lo}, {hi}]")


def _check_imm(imm) -> int:
    if isinstance(imm, bool) or not isinstance(imm, (int, np.integer)) or not _INT32[0] <= imm <= _INT32[1]:
        raise ValueError(f"imm must be a signed 32-bit integer (a5), not {imm!r}")
    return int(imm)


def _check_options(options) -> int:
    if isinstance(options, bool) or not isinstance(options, (int, np.integer)) or not 0 <= options < 1 << 24:
        raise ValueError(f"options must be an integer in [0, 2^24) (a6 bits 8-31), not {options!r}")
    return int(options)


def _source(src, inp: str, word: int, *, all_words: bool = False) -> np.ndarray:
    """The source as ``[rows, cols, words]`` (``all_words``) or the selected word's ``[rows, cols]``."""
    x = _as_int("src", src)
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3:
        raise ValueError(f"src must be x[rows][cols] or rec[rows][cols][words], not shape {x.shape}")
    _check_in("src", x, inp)
    if all_words:
        return x
    if isinstance(word, bool) or not isinstance(word, (int, np.integer)) or not 0 <= word < x.shape[2]:
        raise ValueError(f"word {word!r} is not a word of records with {x.shape[2]} words")
    return x[..., int(word)]


def _aux(aux, layout: tuple[tuple[str, tuple[int, ...]], ...], function: str) -> dict[str, np.ndarray]:
    """Split the flat int32 auxiliary region into its named segments."""
    need = sum(math.prod(shape) for _, shape in layout)
    if aux is None:
        raise ValueError(f"{function} needs an auxiliary region of {need} int32 values "
                         f"({', '.join(f'{n}{list(s)}' for n, s in layout)})")
    a = _as_int("aux", aux).reshape(-1)
    if a.size != need:
        raise ValueError(f"{function}'s auxiliary region must hold {need} int32 values "
                         f"({', '.join(f'{n}{list(s)}' for n, s in layout)}), not {a.size}")
    _check_in(f"{function} aux", a, "I32")
    out, at = {}, 0
    for name, shape in layout:
        n = math.prod(shape)
        out[name] = a[at:at + n].reshape(shape)
        at += n
    return out


def _no_aux(aux, function: str) -> None:
    if aux is not None:
        raise ValueError(f"{function} reads no auxiliary region (a3 = 0xFFFFFFFF), but one was given")


def _blocks(options: int) -> int:
    return max(1, options & 0xFFFF)


def aux_layout(function: str, rows: int, cols: int, words: int = 1, options: int = 0
               ) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The segments of ``function``'s auxiliary region, in order: ``((name, shape), ...)`` of int32 values,
    each C-ordered, one after the other. Empty for functions without one."""
    options = _check_options(options)
    if function in ("combine", "combine_rows"):
        b = _blocks(options)
        segs = (("coef", (b, words, cols)), ("bias", (cols,)))
        return segs + ((("rowmul", (rows,)),) if function == "combine_rows" else ())
    if function == "threshold":
        return (("thr", (cols,)),)
    if function == "quantize":
        return (("absmax", (rows,)),)
    if function in ("add", "mul"):
        return (("y", (rows, cols)),)
    if function == "silu":
        return (("table", (options,)),)
    if function in FUNCTIONS:
        return ()
    raise ValueError(f"unknown POST function {function!r}; known: {', '.join(FUNCTIONS)}")


def pack_aux(function: str, rows: int, cols: int, words: int = 1, options: int = 0, **segments) -> np.ndarray:
    """Build ``function``'s flat int32 auxiliary region from its named segments (see :func:`aux_layout`);
    refuses a missing, extra or misshapen segment and values outside int32."""
    layout = aux_layout(function, rows, cols, words, options)
    names = [n for n, _ in layout]
    if set(segments) != set(names):
        raise ValueError(f"{function}'s auxiliary region has segments {names}, given {sorted(segments)}")
    parts = []
    for name, shape in layout:
        a = _as_int(name, segments[name])
        if a.shape != shape:
            raise ValueError(f"{function} aux segment {name} must have shape {shape}, not {a.shape}")
        _check_in(f"{function} aux segment {name}", a, "I32")
        parts.append(a.reshape(-1))
    return (np.concatenate(parts) if parts else np.zeros(0, np.int64)).astype(np.int32)


# -- host boundary -----------------------------------------------------------------------------------------

def to_float(v, frac: int) -> np.ndarray:
    """Fixed point → float32: ``v·2^-frac`` formed exactly in float64 (``|v| < 2^53``), then rounded once to
    float32 (nearest, ties to even)."""
    v = _as_int("v", v)
    if _max_abs(v) >= 1 << 53:
        raise IntPostOverflow("to_float takes |v| < 2^53 (exact in float64)")
    return (v.astype(np.float64) * 2.0 ** -int(frac)).astype(np.float32)


def from_float(x, frac: int, fmt: str = "I32") -> np.ndarray:
    """Float → fixed point: ``x·2^frac`` rounded to nearest, ties to even (``np.rint``; exact for float32 or
    float64 ``x``, as scaling by a power of two is exact), saturated to ``fmt``. Refuses NaN and infinities."""
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError("from_float needs finite values")
    lo, hi = format_range(fmt)
    scaled = np.clip(np.rint(x * 2.0 ** int(frac)), lo, hi)     # clip first: the cast is then exact
    return scaled.astype(np.int64)


def fixed_point(scale: float, bits: int = 32) -> tuple[int, int]:
    """A positive real ``scale`` as ``(multiplier, shift)`` with ``scale ≈ multiplier·2^-shift`` (gemmlowp's
    ``QuantizeMultiplier``): ``2^(bits−2) <= multiplier < 2^(bits−1)`` (a positive signed ``bits``-bit value, so
    ``bits=32`` fits ``imm``), ``0 <= shift <= 62``.

    From ``scale = q·2^e`` (``q`` in [0.5, 1)): ``multiplier = round(q·2^(bits−1))`` (ties to even; a carry to
    ``2^(bits−1)`` halves it and bumps ``e``), ``shift = bits − 1 − e``. Error bound:
    ``|multiplier·2^-shift − scale| <= 2^-(shift+1) <= scale·2^-(bits−1)``. Refuses scales whose shift would leave
    [0, 62] (too large for the multiplier width, or too small for the shift field).
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 32:
        raise ValueError(f"bits must be an integer in [2, 32], not {bits!r}")
    scale = float(scale)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, not {scale!r}")
    q, e = math.frexp(scale)
    m = round(q * (1 << (bits - 1)))                  # exact product; Python's round is ties-to-even
    if m == 1 << (bits - 1):
        m //= 2
        e += 1
    shift = bits - 1 - e
    if not 0 <= shift <= 62:
        raise ValueError(f"scale {scale!r} needs shift {shift} with a {bits}-bit multiplier; the shift field "
                         "takes 0..62")
    return m, shift


def fixed_point_array(values, bits: int = 16) -> tuple[np.ndarray, int]:
    """Reals as integers with one shared ``frac``: ``round(v·2^frac)`` (ties to even) with the largest ``frac``
    that keeps every ``|int| < 2^(bits−1)``. Error per element ``<= 2^-(frac+1)``. All zeros give ``frac = 0``."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 32:
        raise ValueError(f"bits must be an integer in [2, 32], not {bits!r}")
    v = np.asarray(values, dtype=np.float64)
    if not np.isfinite(v).all():
        raise ValueError("fixed_point_array needs finite values")
    top = float(np.abs(v).max()) if v.size else 0.0
    if top == 0.0:
        return np.zeros(v.shape, np.int64), 0
    frac = bits - 1 - math.frexp(top)[1]
    while True:
        ints = np.rint(v * 2.0 ** frac)
        if np.abs(ints).max() < 2.0 ** (bits - 1):
            return ints.astype(np.int64), frac
        frac -= 1                                     # a rounding carried the largest value to 2^(bits-1)


def silu_table(frac: int, shift: int, lo: int, size: int) -> np.ndarray:
    """The int32 table :func:`silu` reads: entry ``i`` is ``silu(c)`` at ``c = (lo + i)·2^(shift − frac)``, as a
    fixed-point value with ``frac`` fractional bits (``from_float``; ``silu(c) = c/(1 + e^-c)`` in float64)."""
    c = (np.arange(size, dtype=np.float64) + lo) * 2.0 ** (shift - frac)
    return from_float(c / (1.0 + np.exp(-c)), frac, "I32")


# -- the POST functions ------------------------------------------------------------------------------------

def combine(src, aux=None, *, imm=0, shift=0, options=0, out="I32", inp="I32", word=0):
    """Weighted sum of every record word, per output column, then bias:
    ``out[t][j] = sat(round_shift(Σ_b Σ_w rec[b][t][j][w]·coef[b][w][j], shift) + bias[j])``.

    Rescales a matmul's result fields in fixed point: one word (a binary linear's ``a_r·acc``), QBB's per-basis
    sums with their per-channel scales, BiLLM's group sums and plain sums with their ``α`` and ``μ`` (one block
    per 128-column run). ``bias`` is in the *output's* fixed point, added after the rounding (an int32 bias in
    the finer pre-shift fixed point would overflow).

    * src: ``rec[rows][cols][words]``, or ``rec[blocks][rows][cols][words]`` (the runs' result regions one after
      the other) when ``blocks`` > 1.
    * aux: ``coef[blocks][words][cols]`` then ``bias[cols]``.
    * options: bits 0–15 ``blocks`` (0 and 1 both mean one).
    * widths: ``|Σ| <= Σ_{b,w} max|rec[b,·,·,w]|·max_j|coef[b][w][j]| < 2^62``; the sum after the bias in int64.
    """
    return _combine("combine", src, aux, shift, options, out, inp, rows_mul=False)


def combine_rows(src, aux=None, *, imm=0, shift=0, options=0, out="I32", inp="I32", word=0):
    """As :func:`combine` with a per-row multiplier (a dynamic per-token activation scale):
    ``out[t][j] = sat(round_shift(rowmul[t]·Σ_b Σ_w rec[b][t][j][w]·coef[b][w][j], shift) + bias[j])``.

    One rounding for the whole product. aux: ``coef[blocks][words][cols]``, ``bias[cols]``, ``rowmul[rows]``.
    options: bits 0–15 ``blocks``. Widths: ``max|rowmul|·Σ_{b,w} max|rec|·max|coef| < 2^62``.
    """
    return _combine("combine_rows", src, aux, shift, options, out, inp, rows_mul=True)


def _combine(name, src, aux, shift, options, out, inp, *, rows_mul):
    shift, options = _check_shift(shift), _check_options(options)
    format_range(out)
    blocks = _blocks(options)
    rec = _as_int("src", src)
    if rec.ndim == 2:
        rec = rec[..., None]
    if rec.ndim == 3:
        rec = rec[None]
    if rec.ndim != 4 or rec.shape[0] != blocks:
        raise ValueError(f"{name} with {blocks} block(s) needs src rec[{blocks}][rows][cols][words] (or "
                         f"[rows][cols][words] for one block), not shape {np.shape(src)}")
    _check_in("src", rec, inp)
    _, rows, cols, words = rec.shape
    seg = _aux(aux, aux_layout(name, rows, cols, words, options), name)
    coef = seg["coef"]
    bound = sum(_max_abs(rec[b, ..., w]) * _max_abs(coef[b, w]) for b in range(blocks) for w in range(words))
    if rows_mul:
        bound *= _max_abs(seg["rowmul"])
    _check_bound(bound, f"{name}'s weighted sum")
    acc = np.einsum("btjw,bwj->tj", rec, coef)          # int64 throughout (einsum keeps the integer dtype)
    if rows_mul:
        acc = acc * seg["rowmul"][:, None]
    return saturate(round_shift(acc, shift) + seg["bias"][None, :], out)


def threshold(src, aux=None, *, imm=0, shift=0, options=0, out="B1", inp="I32", word=0):
    """Per-column threshold compare, one bit out: ``out[t][j] = rec[t][j][word] > thr[j]`` (``>=`` with
    option bit 0, :data:`OPT_GE`).

    BiBERT's ``sign(a_j·acc + b_j)`` of a binary linear (``a_j > 0``) is this compare on the XNOR accumulator, as
    FINN folds batch-norm into thresholds: ``> floor(−b_j/a_j)`` sends sign(0) to −1, ``>= ceil(−b_j/a_j)`` to +1
    (``models.intpath.sign_thresholds`` derives them exactly). aux: ``thr[cols]``. out: ``B1`` (1 = +1).
    No arithmetic: a compare of two 32-bit values.
    """
    options = _check_options(options)
    if out != "B1":
        raise ValueError(f"threshold writes B1 bits, not {out!r}")
    x = _source(src, inp, word)
    thr = _aux(aux, aux_layout("threshold", *x.shape), "threshold")["thr"]
    return (x >= thr[None, :] if options & OPT_GE else x > thr[None, :]).astype(np.int64)


def compare(src, aux=None, *, imm=0, shift=0, options=0, out="B1", inp="I32", word=0):
    """Compare with the immediate, one bit out: ``out[t][j] = rec[t][j][word] > imm`` (``>=`` with option bit
    0). BiBERT's Bi-Attention ``bool(A)`` is ``dot > 0`` (official code) or ``dot >= 0`` (paper): an
    XNOR-popcount engine built with ``threshold = "strict"``/``"nonstrict"`` outputs exactly this as its ``bit``
    field, so the POST is only needed after an engine without it. No aux; out ``B1``.
    """
    options = _check_options(options)
    _no_aux(aux, "compare")
    imm = _check_imm(imm)
    if out != "B1":
        raise ValueError(f"compare writes B1 bits, not {out!r}")
    x = _source(src, inp, word)
    return (x >= imm if options & OPT_GE else x > imm).astype(np.int64)


def absmax(src, aux=None, *, imm=0, shift=0, options=0, out="I32", inp="I32", word=0):
    """Per-row maximum magnitude, the dynamic per-token scale: ``out[t][0] = sat(max_j |x[t][j]|)`` (shape
    ``[rows, 1]``). A row of zeros gives 0 (defined; :func:`quantize` then writes zero codes, as the float
    quantizers do under their ``1e-5`` floor). ``|−2^31| = 2^31`` saturates to ``2^31 − 1`` in ``I32``.
    No aux; with more than one post lane the reduction adds ``ceil(log2(post_lanes))`` cycles per row (docs/isa.md
    §4).
    """
    _check_options(options)
    _no_aux(aux, "absmax")
    x = _source(src, inp, word)
    if x.shape[1] == 0:
        raise ValueError("absmax needs at least one column")
    return saturate(np.abs(x).max(axis=1, keepdims=True), out)


def quantize(src, aux=None, *, imm=0, shift=0, options=0, out="I8", inp="I32", word=0):
    """Dynamic per-row requantization: ``out[t][j] = sat(clamp(round_div(x[t][j]·qmax, absmax[t]), −qmax,
    qmax))`` with ``qmax = imm`` (127 for int8 codes), ties to even; rows with ``absmax[t] = 0`` give 0.

    The exact rounded quotient (hardware: one reciprocal per row, a multiply and a remainder compare per
    element). ``x/absmax`` is the same ratio the float quantizers form as ``x·(qmax/absmax)``, so the codes equal
    the float reference's except where float32 rounding moved a product across a ``.5`` boundary.
    aux: ``absmax[rows]`` (from :func:`absmax`, non-negative). Widths: ``max|x|·qmax < 2^62``.
    """
    _check_options(options)
    qmax = _check_imm(imm)
    if qmax <= 0:
        raise ValueError(f"quantize needs qmax = imm > 0, not {qmax}")
    x = _source(src, inp, word)
    am = _aux(aux, aux_layout("quantize", *x.shape), "quantize")["absmax"]
    if am.size and int(am.min()) < 0:
        raise ValueError(f"quantize's absmax must be >= 0, got {int(am.min())}")
    _check_bound(_max_abs(x) * qmax, "quantize's x·qmax")
    d = np.where(am > 0, am, 1)[:, None]
    codes = np.where(am[:, None] > 0, round_div(x * qmax, d), 0)
    return saturate(np.clip(codes, -qmax, qmax), out)


def requant(src, aux=None, *, imm=0, shift=0, options=0, out="I8", inp="I32", word=0):
    """Static gemmlowp-style requantization: ``out = sat(round_shift(x·imm, shift))`` with the multiplier
    ``imm`` and ``shift`` of :func:`fixed_point`. No aux. Widths: ``max|x|·|imm| < 2^62``."""
    _check_options(options)
    _no_aux(aux, "requant")
    m, shift = _check_imm(imm), _check_shift(shift)
    x = _source(src, inp, word)
    _check_bound(_max_abs(x) * abs(m), "requant's x·imm")
    return saturate(round_shift(x * m, shift), out)


def add(src, aux=None, *, imm=0, shift=0, options=0, out="I32", inp="I32", word=0):
    """Element-wise sum with a second operand (the residual): ``out = sat(round_shift(x + y, shift))``, both in
    one fixed point. aux: ``y[rows][cols]``. Widths: 33 bits."""
    _check_options(options)
    shift = _check_shift(shift)
    x = _source(src, inp, word)
    y = _aux(aux, aux_layout("add", *x.shape), "add")["y"]
    return saturate(round_shift(x + y, shift), out)


def mul(src, aux=None, *, imm=0, shift=0, options=0, out="I32", inp="I32", word=0):
    """Element-wise product (a gating product): ``out = sat(round_shift(x·y, shift))``; fractional bits add, so
    ``shift`` brings the product back. aux: ``y[rows][cols]``. Widths: ``max|x|·max|y| < 2^62``."""
    _check_options(options)
    shift = _check_shift(shift)
    x = _source(src, inp, word)
    y = _aux(aux, aux_layout("mul", *x.shape), "mul")["y"]
    _check_bound(_max_abs(x) * _max_abs(y), "mul's x·y")
    return saturate(round_shift(x * y, shift), out)


def relu(src, aux=None, *, imm=0, shift=0, options=0, out="I32", inp="I32", word=0):
    """``out = sat(round_shift(max(x, 0), shift))``. No aux. Widths: 32 bits."""
    _check_options(options)
    _no_aux(aux, "relu")
    shift = _check_shift(shift)
    x = _source(src, inp, word)
    return saturate(round_shift(np.maximum(x, 0), shift), out)


def relu2(src, aux=None, *, imm=0, shift=0, options=0, out="I32", inp="I32", word=0):
    """ReLU² (BitNet b1.58's FFN activation): ``out = sat(round_shift(max(x, 0)², shift))``; the square doubles
    the fractional bits, ``shift`` brings them back (``shift = frac`` keeps the input's fixed point). No aux.
    Widths: ``max(x, 0)² < 2^62`` (any 31-bit input)."""
    _check_options(options)
    _no_aux(aux, "relu2")
    shift = _check_shift(shift)
    x = _source(src, inp, word)
    r = np.maximum(x, 0)
    _check_bound(int(r.max()) ** 2 if r.size else 0, "relu2's square")
    return saturate(round_shift(r * r, shift), out)


def silu(src, aux=None, *, imm=0, shift=0, options=0, out="I32", inp="I32", word=0):
    """SiLU by table, in the input's fixed point: ``i = round_shift(x, shift) − imm``;
    ``out = sat(table[max(i, 0)])`` for ``i < size``, ``out = sat(x)`` above the table (``silu(c) → c``).

    The table (:func:`silu_table`) samples ``silu`` at ``(imm + i)·2^shift`` input units, so ``imm`` is the
    table's first input in those units (signed) and ``options`` its ``size`` (bits 0–23, at least 1). Inputs
    below the table read entry 0 (``silu(c) → 0⁻``). Error against ``silu`` of the input's value, with the input's
    ``frac``: at most ``1.1·2^(shift−1−frac)`` (``|silu'| <= 1.1``) plus half an output LSB inside the table, and
    ``|c·e^-c|/(1 + e^-c)`` above it. aux: ``table[size]``. Widths: 32 bits.
    """
    size = _check_options(options)
    if size < 1:
        raise ValueError("silu needs a table of at least one entry (options = size)")
    lo = _check_imm(imm)
    shift = _check_shift(shift)
    x = _source(src, inp, word)
    table = _aux(aux, aux_layout("silu", *x.shape, options=size), "silu")["table"]
    i = round_shift(x, shift) - lo
    inside = i < size
    return saturate(np.where(inside, table[np.clip(i, 0, size - 1)], x), out)


#: POST function name → its definition; the names and ids of the instruction set are ``isa.spec.POST_FUNCTIONS``
#: (``pack`` is a layout transform defined by the engines' weight images, not here).
FUNCTIONS = {f.__name__: f for f in (combine, combine_rows, threshold, compare, absmax, quantize, requant, add, mul,
                                     relu, relu2, silu)}


# -- what stays on the host, and the generated page ----------------------------------------------------------

#: Floating-point work the first version leaves to the host (``HOST`` instructions, timed on the vector unit), and
#: why. docs/intpost.md is generated from this table and the docstrings above.
HOST_OPS = (
    ("layernorm, rmsnorm", "a mean and a variance over the row and a reciprocal square root: the row's dynamic "
     "range is unknown until it is seen, so a fixed point would need a per-row normalisation first (I-BERT's "
     "integer Newton square root is the later route)"),
    ("softmax", "exp over scores spanning tens of units, a row sum and a division; integer forms (I-BERT's "
     "polynomial exp, an exp table) are approximations whose error must be modelled first. BiBERT needs none: its "
     "bool(A) is the XNOR engine's bit"),
    ("add (residual), scale, mask", "BERT's residual sum feeds a LayerNorm and the attention scale and mask a "
     "softmax, both on the host; where both operands of a sum are integer the `add` POST does it"),
    ("gelu", "erf; a table would need each layer's input range (calibration), which v1 does not carry"),
    ("silu", "a sigmoid; the `silu` POST has its table form, used once a layer's input range is calibrated; "
     "until then the LLaMA-style FFNs (BiLLM, QBB) run it on the host. BitNet b1.58's ReLU² is integer (`relu2`)"),
    ("rope", "cos and sin of position × frequency: transcendental, per position"),
    ("embeddings", "a table gather (memory, not arithmetic) and the position and token-type sum; BiBERT's and "
     "TernaryBERT's quantized word tables are gathered on the host too"),
    ("tanh (pooler)", "one row per sequence, transcendental"),
    ("input quantization of a float activation", "the scheme's own quantizer (sign, absmax and round, TernaryBERT's "
     "per-tensor max) on the host's float output, so the codes are bit-identical to the float reference's; after "
     "an integer layer it is the `absmax` and `quantize` POSTs instead"),
)


def _rst_to_md(text: str) -> str:
    import re
    import textwrap
    text = textwrap.dedent(text).strip("\n")
    text = re.sub(r":(?:func|class|data|attr|mod):`~?(?:[\w.]+\.)?(\w+)`", r"`\1`", text)
    return text.replace("``", "`").replace("::\n", ":\n")


def _docstring(obj) -> str:
    doc = obj.__doc__ or ""
    first, _, rest = doc.partition("\n")
    import textwrap
    return _rst_to_md(first.strip() + "\n" + textwrap.dedent(rest))


def host_share(model: str = "bert-base", seq_len: int = 128) -> dict:
    """The host's share of ``model``'s work (``lowbit analyze``'s FLOPs and models.workload's vector ops): FLOPs of
    the host ops by kind under FP32, their total and the model's total, and BiBERT's totals for contrast."""
    from .analysis import analyze
    from .workload import extract_workload
    per = {}
    for op in extract_workload(model, "fp32", seq_len=seq_len).ops:
        if op.kind == "vector":
            per[op.op] = per.get(op.op, 0) + op.vector_flops
    fp32, bibert = analyze(model, "fp32", seq_len=seq_len), analyze(model, "bibert", seq_len=seq_len)
    return {"by_kind": per, "vector": fp32["flops_by_part"]["vector"], "total": fp32["flops"],
            "bibert_vector": bibert["flops_by_part"]["vector"], "bibert_total": bibert["flops"]}


def markdown() -> str:
    """docs/intpost.md: the module's conventions, each POST function, the integer paths' stage lists, and what
    stays on the host in v1 with the reason and its share of BERT-base's work."""
    from isa.spec import POST_FUNCTIONS
    from . import intpath
    lines = ["# Integer post-processing (POST) and the integer-only paths", "",
             "Generated by `python -m models.intpost -o docs/intpost.md` from the docstrings of models/intpost.py "
             "(the normative semantics of the POST instruction, docs/isa.md §3) and models/intpath.py (each "
             "scheme's integer-only deployment path); tests/test_intpost.py checks the page is current.", "",
             "## Conventions", "", _rst_to_md(__doc__), "", "## The functions", ""]
    for name, f in FUNCTIONS.items():
        lines += [f"### `{name}` (POST function {POST_FUNCTIONS[name]})", "", _docstring(f), ""]
    lines += ["### Helpers", ""]
    for f in (round_shift, round_div, to_float, from_float, fixed_point, fixed_point_array, silu_table):
        lines += [f"* `{f.__name__}`: " + _docstring(f).replace("\n", " "), ""]
    lines += ["## Integer-only paths", "", _rst_to_md(intpath.__doc__), ""]
    for f in (intpath.bibert_attention_block, intpath.bitnet_ffn_block):
        lines += [f"### `{f.__name__}`", "", _docstring(f), ""]
    lines += ["### One linear of each scheme", ""]
    for scheme, f in intpath.LINEAR_PATHS.items():
        lines += [f"* {scheme}, `{f.__name__}`: " + _docstring(f).replace("\n", " "), ""]
    share = host_share()
    by = share["by_kind"]
    lines += ["## What stays on the host in v1", "",
              "Each is an explicit `HOST` instruction in the program (docs/isa.md §3), timed on the design's vector "
              "unit. They stay in floating point because of their dynamic range or their transcendentals:", "",
              "| host op | why it stays on the host |", "|---|---|"]
    lines += [f"| {op} | {why} |" for op, why in HOST_OPS]
    kinds = ", ".join(f"{k} {v / 1e6:.1f} M" for k, v in sorted(by.items(), key=lambda kv: -kv[1]))
    lines += ["", f"They are a small share of the work. BERT-base at sequence length 128 (`lowbit analyze --model "
              f"bert-base --scheme fp32 --seq 128 --json`, `flops_by_part`): the vector work is "
              f"{share['vector'] / 1e9:.3f} GFLOPs of {share['total'] / 1e9:.2f} GFLOPs, "
              f"{100 * share['vector'] / share['total']:.2f} %; by kind (models.workload's vector ops, FLOPs): "
              f"{kinds}. Once the matmuls are binary the same host work weighs more: under BiBERT (BOPs/64) it is "
              f"{share['bibert_vector'] / 1e9:.3f} of {share['bibert_total'] / 1e9:.3f} GFLOPs, "
              f"{100 * share['bibert_vector'] / share['bibert_total']:.0f} % — the case for an integer LayerNorm "
              "and GELU table in a later version.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse
    from pathlib import Path
    parser = argparse.ArgumentParser(description="write docs/intpost.md from the docstrings")
    parser.add_argument("-o", "--output", help="write here (default: print)")
    args = parser.parse_args()
    text = markdown()
    if args.output:
        Path(args.output).write_text(text)
    else:
        print(text)
