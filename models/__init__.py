"""Laterne models layer."""
