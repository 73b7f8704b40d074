"""Proofpoint Secure Email Relay report poller (SPEC section 3)."""
