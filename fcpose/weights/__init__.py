"""Weights on disk: checkpoint files (:mod:`.files`: layout, the one safe reader, the one mismatch report),
saving and loading (:mod:`.checkpoint`), the official AdelaiDet converter, the model zoo, ImageNet weights."""
