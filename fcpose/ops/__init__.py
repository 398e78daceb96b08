"""Low-level tensor operations shared by the model, the targets and the post-processing."""
