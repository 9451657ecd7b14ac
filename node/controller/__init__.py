"""The active controller: decisions over the speculative metadata image, and its service."""
