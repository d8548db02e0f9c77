"""Tests of the load-test and benchmark drivers."""
