"""The host's command line."""
