"""Developer benchmarks of the service itself (not shipped in the package)."""
