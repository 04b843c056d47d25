"""Per-modality task packages: data, head and metrics behind one small interface."""
