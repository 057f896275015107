"""favor_qformer."""
