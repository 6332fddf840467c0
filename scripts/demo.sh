#!/usr/bin/env bash
# Set up .venv, then run the main job: detect on the shipped sample photos with the default model,
# plus the ../shared provenance fixtures when they are present beside the checkout (21 images with
# C2PA manifests, generator metadata and camera EXIF). Extra arguments go to `synthdetect detect`, e.g.
#   bash scripts/demo.sh ../shared/datasets/wild-dev      (555 full-size images, about 5 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
targets=(src/synthdetect/samples)
for extra in ../shared/fixtures/provenance; do
  [ -d "$extra" ] && targets+=("$extra")
done
exec .venv/bin/synthdetect detect "${targets[@]}" "$@"
