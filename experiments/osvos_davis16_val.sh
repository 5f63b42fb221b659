#!/usr/bin/env bash
# OSVOS on the 10 DAVIS-2016 val sequences in ../shared, for several fine-tune step counts.
# Usage: bash experiments/osvos_davis16_val.sh DAVIS_ROOT "0 50 100" [extra launch.py flags]
set -euo pipefail
root=$1; steps=${2:-"0 50 100"}; shift 2 || true
sequences=camel,car-roundabout,dog,drift-chicane,drift-straight,goat,horsejump-high,motocross-jump,paragliding-launch,soapbox
for n in $steps; do
  start=$(date +%s)
  python launch.py --config configs/osvos_davis16.py --mode finetune \
    --config.data.root="$root" --config.data.sequences=$sequences \
    --config.finetune.steps="$n" --workdir "runs/osvos_davis16_val_steps$n" "$@"
  echo "steps=$n wall_s=$(( $(date +%s) - start ))" | tee -a runs/osvos_davis16_val_times.txt
done
