"""Load tests and benchmark drivers for the bluegreen proxy."""
