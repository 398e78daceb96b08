"""FCPose: fully convolutional multi-person pose estimation with dynamic instance-aware convolutions.

Public API::

    import fcpose
    model = fcpose.build_model("fcpose_r50_fpn")          # preset name or YAML path
    model, criterion, post = fcpose.build("fcpose_r50_fpn")  # network, training loss, decoding
    fcpose.save_checkpoint(model, "m.pt")                   # config + weights in one file
    predictor = fcpose.Predictor.from_checkpoint("m.pt", device="cpu")
    dets = predictor("img.jpg")                             # or an RGB uint8 HxWx3 array
    dets.boxes, dets.scores, dets.keypoints                 # [N,4] xyxy, [N], [N,K,3]; original pixels"""

__version__ = "0.2.0"

from .builder import build  # noqa: E402
from .config import FCPoseConfig, list_presets, load_config  # noqa: E402
from .errors import CheckpointError, ConfigError, FCPoseError, InputError  # noqa: E402
from .inference.predictor import Predictor  # noqa: E402
from .model.fcpose import FCPose, build_model  # noqa: E402
from .postprocess import PostProcessor  # noqa: E402
from .structures import DenseOutputs, Instances, PoseDetections  # noqa: E402
from .weights.checkpoint import load_model, save_checkpoint  # noqa: E402

__all__ = [
    "CheckpointError", "ConfigError", "DenseOutputs", "FCPose", "FCPoseConfig", "FCPoseError", "InputError",
    "Instances", "PoseDetections", "PostProcessor", "Predictor", "__version__", "build", "build_model",
    "list_presets", "load_config", "load_model", "save_checkpoint",
]
