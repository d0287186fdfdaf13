"""Crash tests: real processes killed at known points, then checked from outside."""
