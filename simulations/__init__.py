"""Laterne simulations layer."""
