"""Apigee Sense webhook receiver (docs/sense_listener.md)."""
