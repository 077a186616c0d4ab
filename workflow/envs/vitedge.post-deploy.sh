#!/usr/bin/env bash
# Snakemake runs this inside the environment vitedge.yaml created, from the folder snakemake was
# started in (the checkout): vitedge itself and what the rules need, as the README installs them.
set -euo pipefail
if [ ! -f pyproject.toml ] || ! grep -q '^name = "vitedge"' pyproject.toml; then
  echo "vitedge.post-deploy.sh: run snakemake from the vitedge checkout (no vitedge pyproject.toml in $PWD)" >&2
  exit 1
fi
python -m pip install -e ".[all]"
