"""Card readers: each turns a physical (or simulated) reader into a stream of `CardRead`s."""
