"""The metadata image and its replay from the metadata log."""
