"""The measurements the workflow runs, as commands of the package (`python -m vitedge.benchmarks.<name>`):

- `compression`: fp32 vs int8 per format, and every artefact against fp32 of its runtime and torch
  eager fp32 (rule `compression_benchmark`, reports/compression.md);
- `train_throughput`: img/s of the model step alone vs the full input path (rule `train_throughput`);
- `peers`: the models people would deploy instead, validated like vitedge's (rule `peers`,
  reports/peers.json; the models themselves are `vitedge.peers`).

They sit in the package, not in the repository's benchmarks/ folder, so the workflow runs only
code the package's tests and layer map cover; benchmarks/ keeps the stand-alone measurements.
"""
