"""One job's frame: its context, paths, stop signal and failure file."""
