"""The only modules that import splunklib or solnlib."""
