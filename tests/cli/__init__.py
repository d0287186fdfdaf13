"""Tests of the grctl command line, driven as a subprocess against a real daemon."""
