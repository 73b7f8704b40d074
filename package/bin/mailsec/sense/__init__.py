"""Apigee Sense webhook receiver (SPEC section 4)."""
