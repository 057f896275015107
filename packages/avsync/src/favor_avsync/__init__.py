"""favor_avsync."""
