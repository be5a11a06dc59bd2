"""An example third-party corediff plugin package."""
