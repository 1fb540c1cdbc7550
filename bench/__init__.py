"""The speed and memory benchmark (`sigma bench`)."""
