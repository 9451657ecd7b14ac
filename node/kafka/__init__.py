"""Kafka's wire protocol on strom's brokers: codec (codec.py, messages.py), listener
(listener.py) and the translation to strom's handlers (apis.py)."""
