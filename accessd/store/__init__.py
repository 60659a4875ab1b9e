"""Durable storage on the SD card: the rule cache and the event journal (SQLite, WAL)."""
