"""The issue's blocks on the accelerator RTL: BiBERT's attention block, BitNet b1.58's FFN, and the TernaryBERT,
BitNet b1.58, int8, QBB, BiLLM and BiBERT linears of ``models.intpath``, compiled by ``sim.blocks`` and run on the
generated accelerator — every stage the program leaves in the buffers and the output in DRAM equal to the integer
path's, every byte of DRAM and the buffers equal to the simulator's, and the RTL's cycles equal to the simulator's.

The default suite runs them at small sizes on small variants of the built-in designs (``@small``: engines of at
most 4 rows × 32 lanes, buffers of 64 KiB, quick to build and run): the ternary-engine blocks (TernaryBERT, BitNet
b1.58 and int8 linears, BitNet's FFN) and BiBERT's on two designs each — the second port-limited and slow on DRAM,
or slow on DRAM —, QBB's and BiLLM's on one each. ``-m slow`` runs the table of ``lowbit verify accelerator``
(docs/accelerator.md): larger blocks on the built-in designs themselves and their variants.
"""

import pytest

from .accel import DEFAULT_SHAPES, verify_shapes

#: (shape, design): six designs (builds) in all.
SMALL_SHAPES = (
    ("ternarybert:12x64x40", "ternary@small"), ("bitnet-b1.58:8x96x24", "ternary@small"),
    ("int8:8x64x24", "ternary@small"), ("bitnet-ffn:6x64x96", "ternary@small"),
    ("ternarybert:8x128x24", "ternary@small+ports1+slow-dram"), ("bitnet-b1.58:6x64x20", "ternary@small+ports1+slow-dram"),
    ("int8:6x96x16", "ternary@small+ports1+slow-dram"), ("bitnet-ffn:4x64x80", "ternary@small+ports1+slow-dram"),
    ("qbb:8x64x24", "binary-basis@small"), ("qbb:6x160x12", "binary-basis@small"),
    ("billm:8x256x24", "billm@small"), ("billm:5x128x8", "billm@small"),
    ("bibert:8x64x24", "xnor@small+pos"), ("bibert-attn:8x64x4", "xnor@small+pos"),
    ("bibert:6x128x16", "xnor@small+pos+slow-dram"), ("bibert-attn:6x32x2", "xnor@small+pos+slow-dram"),
)


def _check(rows):
    bad = [r for r in rows if not r.ok]
    assert not bad, "\n".join(f"{r.shape} on {r.design}: sim {r.sim_cycles}, RTL {r.rtl_cycles} cycles; output "
                              f"{'=' if r.outputs_equal else '≠'} models/, bytes {'=' if r.bytes_equal else '≠'} sim"
                              for r in bad)


def test_the_blocks_at_small_sizes():
    rows = verify_shapes(SMALL_SHAPES)
    _check(rows)
    # the cycle counts are the simulator's (equal above) and not trivial: every block did real work
    assert all(r.rtl_cycles > 100 for r in rows)


@pytest.mark.slow
def test_the_documented_table():
    _check(verify_shapes(DEFAULT_SHAPES))
