"""Demo, test and benchmark helpers: run from the repository, never shipped in the image."""
