"""The transaction coordinator (KIP-98): transactional ids, their producer ids and epochs, and
the state of each one's current transaction, kept in the compacted `__transaction_state`."""
