"""Laterne controller layer."""
