# The student-batch A/B of 2026-12-04 (2-core AMD EPYC, nothing else running): the config's student
# stage at batch 64 instead of 128, from the config's deterministic 30-epoch teacher (PrivateTest 67.90%).
# 1. the teacher, as the config trains it (one-go-3's, bit for bit):
snakemake --cores 2 results/fer2013/models/teacher.pt --configfile workflow/config/fer2013.yaml
# 2. the student: fer2013.yaml's distill section with batch_size 64 and lr 0.0028 (the peak lr,
#    lr * batch / 256, scaled by sqrt(64/128) from batch 128's 1e-3 to 7e-4: AdamW's rule of thumb)
mkdir -p out
/usr/bin/time -v python -m vitedge.distill --data results/fer2013/data \
  --teacher results/fer2013/models/teacher.pt --out out/student.pt \
  --model-json '{"arch": "vit", "preset": "hybrid-tiny-48", "overrides": {"distilled": true, "drop_path_rate": 0.05}}' \
  --train-json '{"distillation_type": "hard", "alpha": 0.5, "tau": 1.0, "epochs": 90, "batch_size": 64, "lr": 0.0028, "warmup_epochs": 2, "label_smoothing": 0.1, "class_balance": "none", "augment": "strong", "threads": 2, "channels_last": true}' \
  --device cpu --report out/distill.md --resume > out/distill.log 2>&1
