"""Support shared by the tests and the benchmarks: local servers, the store table, fake stores.

Neither `tests/` nor `benchmarks/` imports the other; both import this package.
"""
