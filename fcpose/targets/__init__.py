"""Training targets (pure, no_grad) and their decoders."""
