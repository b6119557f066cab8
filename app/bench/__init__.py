"""`atomic-counter bench`: load a running service over HTTP and check its counters stay correct."""
