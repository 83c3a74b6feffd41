"""Laterne api layer."""
