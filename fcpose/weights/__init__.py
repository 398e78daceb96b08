"""Weights on disk: reading and writing checkpoints, the official AdelaiDet converter, the model zoo and
ImageNet backbone weights.

- :mod:`fcpose.weights.files` — the checkpoint layout (:func:`~fcpose.weights.files.checkpoint_dict`), the one
  safe reader (:func:`~fcpose.weights.files.safe_load`) and the one state-dict mismatch report
  (:class:`~fcpose.weights.files.StateDictReport`);
- :mod:`fcpose.weights.checkpoint` — saving, reading any supported file, loading into a model, fine-tuning
  initialisation (``--init``);
- :mod:`fcpose.weights.official` — official AdelaiDet FCPose checkpoints (detectron2 layout) -> fcpose;
- :mod:`fcpose.weights.zoo` — names of released checkpoints, downloaded and verified on first use;
- :mod:`fcpose.weights.imagenet` — ImageNet classification checkpoints loaded into a backbone.
"""
