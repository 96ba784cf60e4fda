"""Sweeps: sweep files, their expansion into Ray Tune trials, and the launcher."""
