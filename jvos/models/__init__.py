"""Flax linen networks: backbones (VGG16, MobileNetV2), DeepLabV3 and the VOS models."""
