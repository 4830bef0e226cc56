"""The stream contract every lowbit unit follows, the traffic a bench applies, and the cycle count.

Streams are ``amaranth.lib.stream`` streams: a beat transfers on a rising clock edge where ``valid``
and ``ready`` are both high; a producer keeps ``valid`` and the payload steady until the transfer.

**Cycle numbering.** Cycle 0 is the first clock cycle in which reset is low; cycle ``c`` ends with the
``c+1``-th rising edge after that. A handshake "in cycle c" is one completed at the edge ending cycle c.

**Cycle count** (the one definition used by sim, the Amaranth benches and the cocotb benches)::

    cycles = c_last_output_handshake - c_first_input_handshake + 1

**Stream rules** (:data:`STREAM_RULES`, published in every manifest): what a sender and a receiver must do and
what the unit guarantees; :data:`PADDING_RULE` and :data:`DISCARD_RULE` say how a problem whose sizes are not
multiples of the unit's lanes and rows is padded and unpadded; :data:`K_BEYOND_MAX_K` what a too-long reduction does.

**Traffic.** A bench's source and sink follow a :class:`Traffic` pattern so that every level sees the
same stalls: in cycle ``c`` a source that holds no pending beat offers the next one iff
``offer[c % len(offer)]``; once offered, the beat stays valid until it transfers. The sink is ready in
cycle ``c`` iff ``ready[c % len(ready)]``. The full-throughput traffic (both always high) is the one the
closed-form cycle formulas describe.
"""

from dataclasses import dataclass, field

import numpy as np

__all__ = ["CYCLE_COUNT_DEFINITION", "STREAM_RULES", "PADDING_RULE", "DISCARD_RULE", "K_BEYOND_MAX_K",
           "measured_cycles", "Traffic"]

CYCLE_COUNT_DEFINITION = (
    "cycles = c_last_output_handshake - c_first_input_handshake + 1, where cycle 0 is the first cycle with "
    "reset low and a handshake in cycle c is a rising edge ending cycle c with valid and ready both high"
)


#: Both sides of every stream port of a unit (``amaranth.lib.stream`` rules, and what the engines do).
STREAM_RULES = {
    "handshake": "a beat transfers at a rising clock edge where valid and ready are both high and rst is low",
    "sender_valid": "once the sender raises operand.valid it keeps it high until the beat transfers; it may raise "
                    "valid whether or not ready is high",
    "sender_payload": "operand.payload stays unchanged while operand.valid is high and the beat has not transferred",
    "operand_ready": "operand.ready depends combinationally on result.valid and result.ready only (see backpressure), "
                     "never on operand.valid or operand.payload, so a sender that waits for ready makes no loop",
    "result_hold": "result.valid and result.payload are registers: once result.valid is high, both stay unchanged "
                   "until the result transfers; result.valid never depends on result.ready in the same cycle",
    "result_stall": "result.ready may stay low for any number of cycles: the whole pipeline stalls, operand.ready is "
                    "low meanwhile, and nothing is lost",
    "during_reset": "beats offered while rst is high are dropped even though operand.ready may read high: keep "
                    "operand.valid low until rst is low",
}

#: How the operand stream of a problem is padded (the values are each operand field's ``padding``).
PADDING_RULE = ("K is padded up to a multiple of lanes and M up to a multiple of rows. An element of an operand field "
                "at a padded index of axis A (lane: reduction element >= K; row: output row >= M) carries the raw "
                "bits padding[A] of that field; a padded row carries padding.row on every lane. A valid_lanes field "
                "counts only the lanes that are not padding.")

#: Which result elements are padding.
DISCARD_RULE = ("element [..][r] of a result field with a row axis, in the result of row block b, is output row "
                "b*rows + r; discard it when b*rows + r >= M (a padded row)")

#: What a reduction longer than the unit was generated for does.
K_BEYOND_MAX_K = ("the engine does not check K: a reduction longer than max_k elements may overflow the accumulators "
                  "and result fields, which then wrap silently (two's complement). Split it into reductions of at "
                  "most max_k elements and add their sums on the host (thresholds and signs are then taken on the "
                  "host), or generate the unit with a larger max_k. lowbit's own drivers refuse K > max_k "
                  "(EngineParams.check_problem).")


def measured_cycles(first_input_cycle: int, last_output_cycle: int) -> int:
    """The cycle count of a run (see :data:`CYCLE_COUNT_DEFINITION`)."""
    if first_input_cycle < 0 or last_output_cycle < first_input_cycle:
        raise ValueError(f"no complete run: first input in cycle {first_input_cycle}, "
                         f"last output in cycle {last_output_cycle}")
    return last_output_cycle - first_input_cycle + 1


@dataclass(frozen=True, eq=False)
class Traffic:
    """Periodic source-offer and sink-ready patterns (bool arrays, each of length >= 1)."""

    offer: np.ndarray = field(default_factory=lambda: np.ones(1, dtype=np.bool_))
    ready: np.ndarray = field(default_factory=lambda: np.ones(1, dtype=np.bool_))

    def __post_init__(self):
        for name in ("offer", "ready"):
            pattern = np.ascontiguousarray(getattr(self, name), dtype=np.bool_)
            if pattern.ndim != 1 or pattern.size == 0:
                raise ValueError(f"traffic pattern {name!r} must be a non-empty 1-D array")
            if not pattern.any():
                raise ValueError(f"traffic pattern {name!r} is never high: the run would never end")
            object.__setattr__(self, name, pattern)

    @classmethod
    def full(cls) -> "Traffic":
        """Source always offers, sink always ready."""
        return cls()

    @classmethod
    def random(cls, seed: int, *, offer_prob: float = 0.7, ready_prob: float = 0.6,
               period: int = 997) -> "Traffic":
        """Seeded random stalls on both sides (a prime period keeps the two patterns from aligning)."""
        rng = np.random.default_rng(seed)
        offer = rng.random(period) < offer_prob
        ready = rng.random(period + 2) < ready_prob
        offer[0] = ready[0] = True
        return cls(offer, ready)

    @property
    def is_full(self) -> bool:
        return bool(self.offer.all() and self.ready.all())

    def offers(self, cycle: int) -> bool:
        return bool(self.offer[cycle % self.offer.size])

    def sink_ready(self, cycle: int) -> bool:
        return bool(self.ready[cycle % self.ready.size])
