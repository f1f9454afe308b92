"""Sinks: what writes arrays and chunk files (chunk files, codecs, label images)."""
