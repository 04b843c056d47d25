"""Task package: audio_sc09."""
