"""Training from scratch: the loop, its config and its CLI command."""
