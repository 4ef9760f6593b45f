#!/usr/bin/env bash
# One GPU round for the embedded model, each stage warm-started from src/kinema/weights/kinema-tiny and bounded by
# minutes rather than steps:
#   1. the VAE, on streamed world clips (configs/vae/tiny.yaml, detail weight 2);
#   2. the DiT, on streamed world clips of 2, 4 and 6 s encoded on the GPU by the VAE of stage 1;
#   3. an fp32 pipeline folder OUT/pipeline (scripts/pipeline_fp16.py makes the fp16 copy that src/kinema/weights/ holds).
# Clips are rendered by (cores - 2) worker processes, a few batches ahead; each rendered DiT batch serves
# REPEAT steps with fresh noise, times and masks.
#
# usage: scripts/train_gpu.sh OUT [VAE_MINUTES] [DIT_MINUTES]   (VAE_MINUTES 0: use VAE_INIT's VAE as it is)
# env:   PYTHON  the interpreter (default: python3)
#        KINEMA_TEXT_ENCODER  a local text-encoder folder to train with (default: minilm, the packaged one)
#        VAE_CONFIG  the VAE config (default configs/vae/tiny.yaml; configs/vae/tiny-s4.yaml for 4x spatial)
#        DIT_CONFIG  the DiT config (default configs/dit/tiny.yaml; configs/dit/tiny-s4.yaml with the 4x VAE and DIT_INIT=none)
#        VAE_INIT DIT_INIT  warm starts (defaults: src/kinema/weights/kinema-tiny/vae and .../transformer; "none": from scratch)
#        VAE_STEPS DIT_STEPS DIT_BATCH DIT_LR DIT_WARMUP REPEAT  schedules and sizes (defaults below)
set -euo pipefail
out=${1:?usage: scripts/train_gpu.sh OUT [VAE_MINUTES] [DIT_MINUTES]}
vae_minutes=${2:-2.5}
dit_minutes=${3:-5}
text=${KINEMA_TEXT_ENCODER:-minilm}
workers=$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))
mkdir -p "$out"
py=${PYTHON:-python3}
if ! "$py" -c "import kinema" 2>/dev/null; then export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"; fi

vae=$out/vae-run/vae
if [ "$vae_minutes" = 0 ]; then
vae=${VAE_INIT:-src/kinema/weights/kinema-tiny/vae}
else
echo "== VAE: up to ${vae_minutes} min, ${workers} render workers"
vae_init=${VAE_INIT:-src/kinema/weights/kinema-tiny/vae}; [ "$vae_init" = none ] && vae_init=null
"$py" -m kinema train vae --config "${VAE_CONFIG:-configs/vae/tiny.yaml}" "init=$vae_init" \
    "train.out_dir=$out/vae-run" "train.steps=${VAE_STEPS:-4000}" train.batch_size=32 train.lr=2e-4 \
    train.warmup_steps=100 train.precision=bf16 train.save_every=1000 train.eval_every=1000 \
    "train.max_minutes=$vae_minutes" loss.detail=2.0 "data.workers=$workers" data.prefetch=4
fi

echo "== DiT: up to ${dit_minutes} min"
dit_init=${DIT_INIT:-src/kinema/weights/kinema-tiny/transformer}; [ "$dit_init" = none ] && dit_init=null
dit_config=${DIT_CONFIG:-configs/dit/tiny.yaml}
"$py" -m kinema train dit --config "$dit_config" "init=$dit_init" \
    "vae=$vae" "text_encoder=$text" "train.out_dir=$out/dit-run" "train.steps=${DIT_STEPS:-3000}" \
    "train.batch_size=${DIT_BATCH:-128}" "train.lr=${DIT_LR:-3e-4}" "train.warmup_steps=${DIT_WARMUP:-200}" train.precision=bf16 \
    train.save_every=1000 train.log_every=20 "train.max_minutes=$dit_minutes" "data.latent_cache=[]" \
    "data.mix=[{frames: 17, shots: [1, 1], weight: 8}, {frames: 33, shots: [1, 2], weight: 3}, {frames: 49, shots: [1, 3], weight: 1.6}]" \
    "data.workers=$workers" data.prefetch=6 "data.repeat=${REPEAT:-2}"

echo "== export"
"$py" -m kinema train export-dit --config "$dit_config" -o "$out/pipeline" --fp32 \
    --name kinema-tiny "vae=$vae" text_encoder=minilm "train.out_dir=$out/dit-run"
