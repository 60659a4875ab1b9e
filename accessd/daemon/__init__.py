"""The running daemon: the door controller, its service loop and its control socket."""
