"""Data utilities for ``percept``: datasets, manifests and the offline synthetic demo set."""
