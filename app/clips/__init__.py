"""Clips: one rendered (or imported) GIF per prompt and arm, with render state and telemetry."""
