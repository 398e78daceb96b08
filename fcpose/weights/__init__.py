"""Weights on disk: reading and writing checkpoints, the official AdelaiDet converter, the model zoo and
ImageNet backbone weights.

- :mod:`fcpose.weights.checkpoint` — the fcpose checkpoint layout, the one safe reader (:func:`safe_load`),
  saving, loading into a model, fine-tuning initialisation and the state-dict mismatch report
  (:class:`~fcpose.weights.checkpoint.StateDictReport`);
- :mod:`fcpose.weights.official` — official AdelaiDet FCPose checkpoints (detectron2 layout) -> fcpose;
- :mod:`fcpose.weights.zoo` — names of released checkpoints, downloaded and verified on first use;
- :mod:`fcpose.weights.imagenet` — ImageNet classification checkpoints loaded into a backbone.
"""
