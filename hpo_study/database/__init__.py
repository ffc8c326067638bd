"""Locating and opening the study's database: credentials, TLS, region, redaction, error classes."""
