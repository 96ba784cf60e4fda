"""The pocket world: an offline, CPU-sized stand-in for the paper's experiment."""
