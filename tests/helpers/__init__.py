"""Test infrastructure: shared settings, random programs, and a local Hub server for upload/download tests."""
