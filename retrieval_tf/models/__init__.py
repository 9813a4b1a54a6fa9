"""Baseline models shared by every paper's comparison tables."""
