"""Core processing shared by training and every backend: image I/O, preprocessing, decoding."""
