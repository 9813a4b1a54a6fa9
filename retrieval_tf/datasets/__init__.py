"""Dataset loaders (real and synthetic) and splits."""
