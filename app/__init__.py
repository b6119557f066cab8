"""atomic-counter: atomic counters over HTTP on six datastores."""

__version__ = "0.1.0"
