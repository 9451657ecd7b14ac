"""Real process and network faults: the lab (lab.py), histories (history.py), the checker."""
