"""Flax linen networks: backbones (VGG16, MobileNetV2, ResNet), DeepLabV3 and the VOS models."""
