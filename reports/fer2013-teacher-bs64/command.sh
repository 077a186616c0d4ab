# The teacher-batch A/B of 2026-12-04 (2-core AMD EPYC, nothing else running): fer2013.yaml's teacher
# stage (30 epochs, channels_last) at batch 64 instead of 128, peak lr scaled by sqrt(64/128) to 1.41e-3.
snakemake --cores 2 results/fer2013/models/teacher-pretrain.pt --configfile workflow/config/fer2013.yaml
mkdir -p teacher
/usr/bin/time -v python -m vitedge.finetune --data results/fer2013/data \
  --init results/fer2013/models/teacher-pretrain.pt --out teacher/teacher.pt \
  --model-json '{"arch": "cnn", "preset": "cnn-small-48", "overrides": {}}' \
  --train-json '{"epochs": 30, "batch_size": 64, "lr": 0.00566, "warmup_epochs": 1, "label_smoothing": 0.1, "class_balance": "none", "augment": "strong", "threads": 2, "channels_last": true}' \
  --device cpu --stage finetune --resume > teacher/finetune.log 2>&1
