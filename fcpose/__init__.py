"""FCPose: fully convolutional multi-person pose estimation (CVPR 2021) in plain PyTorch."""
