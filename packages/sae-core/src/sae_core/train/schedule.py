"""Learning-rate and sparsity-coefficient schedules (pure functions of the step)."""

from __future__ import annotations


def lr_factor(step: int, total: int, warmup: int, decay_frac: float) -> float:
    """Linear warmup from 0 over ``warmup`` steps, constant, then linear decay to 0 over the last
    ``decay_frac`` of training (the shape that works well for SAEs)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    decay_steps = int(total * decay_frac)
    decay_start = total - decay_steps
    if decay_steps > 0 and step >= decay_start:
        return max(0.0, (total - step) / decay_steps)
    return 1.0


def sparsity_factor(step: int, warmup: int) -> float:
    """Sparsity coefficient ramps linearly from 0 to its value over ``warmup`` steps: step ``s``
    (0-based) uses ``min(1, (s + 1) / warmup)``, so the last warmup step is the first at full value
    (``tests/core/train/test_train_details.py`` reads the applied weight back from the logged loss terms)."""
    return 1.0 if warmup <= 0 else min(1.0, (step + 1) / warmup)
