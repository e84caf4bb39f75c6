"""radground."""
