"""Consumer-group decisions as pure code: coordinator placement, assignors, and the KIP-848-style
reconciliation of target and current assignments. No I/O, no asyncio: the coordinator's shell
(node/) feeds these inputs and acts on their results."""
