"""Proving that an export is servable by stock TensorFlow Serving."""
