"""Tests of laterne.api."""
