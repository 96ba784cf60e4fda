"""Trainables: generators, guidance, the adaptation loop and its Ray Tune shell."""
