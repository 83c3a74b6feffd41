"""Laterne drivers layer."""
