#!/usr/bin/env bash
# Set up .venv, then run the main job: detect on the shipped sample photos with the default model,
# plus the ../shared datasets and provenance fixtures when they are present beside the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
targets=(src/synthdetect/samples)
for extra in ../shared/datasets/wild-dev ../shared/fixtures/provenance; do
  [ -d "$extra" ] && targets+=("$extra")
done
exec .venv/bin/synthdetect detect "${targets[@]}" "$@"
