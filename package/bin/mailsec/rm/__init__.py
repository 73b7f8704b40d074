"""Release Manager mail alert action (docs/rm_send_mail.md)."""
