"""Task package: images."""
