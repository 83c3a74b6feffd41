"""Laterne: street lighting and public-building HVAC control."""
