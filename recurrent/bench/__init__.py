"""Benchmarks that ship with the package (`recurrent bench ...`)."""
