"""Release Manager mail alert action (SPEC section 6)."""
