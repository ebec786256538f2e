"""Benchmarks: the real bot against loopback fakes, side by side with two baselines."""
