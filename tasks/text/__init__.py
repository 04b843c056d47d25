"""Task package: text."""
