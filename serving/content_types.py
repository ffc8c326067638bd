"""The media types /invocations reads and writes."""

JSON = "application/json"
CSV = "text/csv"
JSONLINES = "application/jsonlines"  # one JSON value per line (the SDK's JSONLinesSerializer)
NPY = "application/x-npy"
ANY = "*/*"
TEXT = "text/plain"  # error messages
