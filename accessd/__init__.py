"""accessd: offline-first door access controller."""

__version__ = "0.1.0"
