"""The media types /invocations reads and writes."""

JSON = "application/json"
CSV = "text/csv"
NPY = "application/x-npy"
ANY = "*/*"
TEXT = "text/plain"  # error messages
