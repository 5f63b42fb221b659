#!/usr/bin/env bash
# VGG-16 from scratch against MobileNetV2 (width 0.5) from the DeepLabV3 TFLite trunk: two OSVOS
# parents trained with one short recipe (same steps, batch, crops, optimizer), each then scored
# on the 10 DAVIS-2016 val sequences in ../shared, parent only and fine-tuned.
# Usage: bash experiments/osvos_backbones.sh DAVIS_ROOT DEEPLAB_TFLITE [STEPS] [FINETUNE_STEPS]
set -euo pipefail
root=$1; tflite=$2; steps=${3:-300}; finetune_steps=${4:-50}
sequences=camel,car-roundabout,dog,drift-chicane,drift-straight,goat,horsejump-high,motocross-jump,paragliding-launch,soapbox
recipe=(--config.data.root="$root" --config.train.num_steps="$steps" --config.train.batch_size=4
        --config.train.crop_size="(192, 192)" --config.train.scale_range="(0.35, 0.7)"
        --config.train.learning_rate=3e-4 --config.train.warmup_steps=30
        --config.train.checkpoint_every=100)
declare -A model=(
  [vgg16_scratch]="--config.model.backbone=vgg16 --config.model.input_style=torch_imagenet --config.model.pretrained="
  [mobilenet_v2_deeplab]="--config.model.pretrained=$tflite")
for name in vgg16_scratch mobilenet_v2_deeplab; do
  work=runs/osvos_backbones/$name
  # shellcheck disable=SC2086
  python launch.py --config configs/osvos_davis16.py --mode train "${recipe[@]}" ${model[$name]} \
    --workdir "$work/parent"
  for n in 0 "$finetune_steps"; do
    python launch.py --config configs/osvos_davis16.py --mode finetune \
      --config.data.root="$root" --config.data.sequences=$sequences \
      --config.weights="$work/parent/params.msgpack" --config.finetune.steps="$n" \
      --config.segment.max_height=240 --workdir "$work/finetune$n"
  done
done
