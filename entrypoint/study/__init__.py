"""Joining the study: the schema lock, the race-safe create-or-load, the heartbeat storage."""
