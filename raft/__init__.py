"""The Raft consensus core: a pure state machine (no I/O, clocks, threads or randomness of its own).

See DESIGN.md §5. Only the standard library may be imported here (tests/unit/test_layout.py).
"""
