"""Proofpoint Secure Email Relay report poller (docs/ser_report.md)."""
