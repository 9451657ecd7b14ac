"""A tiny deterministic PRNG (SplitMix64) for election timeouts when the driver injects none.

The core never draws randomness of its own (DESIGN.md §5): it calls `rand_int(n)`, which must
return an int in [0, n). The node passes one backed by `random.SystemRandom`; tests pass a
seeded one. `SplitMix64(seed)` is a stdlib-free default with good enough spread.
"""

from __future__ import annotations

_MASK64 = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed: int) -> None:
        self._state = seed & _MASK64

    def next_u64(self) -> int:
        self._state = (self._state + 0x9E3779B97F4A7C15) & _MASK64
        z = self._state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return z ^ (z >> 31)

    def __call__(self, n: int) -> int:
        """An int in [0, n); n must be > 0."""
        assert n > 0
        return self.next_u64() % n
