"""Quantization-aware training: the demo's loss falls under each trainable scheme (slow)."""

import pytest

from models.training import qat_demo


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["bitnet-b1.58", "bibert", "ternarybert"])
def test_qat_demo_loss_falls(scheme):
    result = qat_demo(scheme, steps=150, teacher_steps=150)
    assert result.teacher_accuracy > 0.9
    assert result.last_loss < 0.5 * result.first_loss
    assert result.accuracy > 0.9
