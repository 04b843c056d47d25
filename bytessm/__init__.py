"""bytessm: token-free long-sequence modeling with selective state space models."""
__version__ = "0.1.0"
