"""Triton selective-scan kernels."""
