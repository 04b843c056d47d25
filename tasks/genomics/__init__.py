"""Task package: genomics."""
