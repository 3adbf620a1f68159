"""Data: synthetic plates, real-data loaders."""
