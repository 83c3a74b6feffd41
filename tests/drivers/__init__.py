"""Tests of laterne.drivers."""
