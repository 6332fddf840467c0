#!/bin/bash
# The cifake-cnn recipe sweep as one call of the lent GPU machine (validation only; see cifake_recipe_sweep.py).
#
# Prepare here, in the repository root (both folders are ignored by git through .git/info/exclude):
#   echo /.sweep/ >> .git/info/exclude; echo /.whl/ >> .git/info/exclude
#   .venv/bin/python benchmarks/cifake_recipe_sweep.py ../shared/datasets/cifake-train-80k.zip --pack .sweep
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl typer==0.29.2 rich==15.0.0 \
#       click==8.5.1 annotated-doc==0.0.7 shellingham==1.5.4 markdown-it-py==4.3.0 mdurl==0.1.2 \
#       pygments==2.21.0 pillow==13.0.0
# Then run `bash benchmarks/cifake_recipe_sweep_device.sh [DEADLINE_S]` there with carry [".sweep", ".whl"] and a
# timeout about 60 s above the deadline. Only validation numbers come back ($OUT/results.jsonl, $OUT/sweep.log);
# each run's own log, which also prints its held-out accuracy, stays on the device.
DEADLINE=${1:-530}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 9
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv
python3 -c "import sys, torch, typer, rich, PIL; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available(), typer.__version__, PIL.__version__)" || exit 7
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 20 > "$OUT/gpu_util.csv" 2>&1 &
MONITOR=$!
(timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_train.py -k "gpu or device" > "$OUT/gpu_tests.log" 2>&1; echo "rc $?" >> "$OUT/gpu_tests.log") &
TESTS=$!
python3 benchmarks/cifake_recipe_sweep.py /tmp/shared/cifake-train-80k.zip --from-tar .sweep/cifake.tar.xz \
    --out /tmp/sweep --results "$OUT/results.jsonl" --workers 14 --deadline-s "$DEADLINE" --device cuda 2>&1 | tee "$OUT/sweep.log"
grep -h -i "error\|Traceback" /tmp/sweep/*.log | grep -v -i "held-out\|wrote" | sort | uniq -c | head -20
kill "$MONITOR"
wait "$TESTS"
tail -5 "$OUT/gpu_tests.log"
