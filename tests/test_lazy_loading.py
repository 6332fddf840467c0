"""Libraries and weights load when an image needs them, and loading errors still surface at load.

`synthdetect detect photo.jpg` used to import torch, scikit-learn and SciPy (about 6 of its 9 seconds) although the
photo's model needs none of them; ``benchmarks/cli_latency.py`` measures the start-up.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from synthdetect import Detector
from synthdetect.models import BUILTIN_DIR, ModelPackageError
from synthdetect.models import base as model_base
from synthdetect.scan.engine import detector_fingerprint


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def default_routed_to(folder, last_model: str) -> str:
    """A copy of the default router card in ``folder`` whose last (full-size) route names ``last_model``."""
    card = json.loads((BUILTIN_DIR / "default" / "model.json").read_text())
    card["routes"][-1]["model"] = last_model
    folder.mkdir(exist_ok=True)
    (folder / "model.json").write_text(json.dumps(card))
    return str(folder)


def test_every_lazy_registry_table_names_the_module_that_registers_each_entry():
    """An entry registered by a module its table does not name would be unknown to a fresh process."""
    code = (
        "import json, synthdetect.models as m\n"
        "from synthdetect.models import base, view_features as vf\n"
        "from synthdetect.train import registry as tr\n"
        "tables = {'kinds': base.KINDS, 'extractors': vf.EXTRACTORS, 'trainers': tr.TRAINERS, 'prefixes': m.PREFIXES}\n"
        "for table in tables.values(): table.import_all()\n"
        "print(json.dumps({name: {k: f.__module__ for k, f in t.entries.items()} for name, t in tables.items()}))\n"
    )
    registered = json.loads(run_python(code))
    from synthdetect.models import PREFIXES
    from synthdetect.models.view_features import EXTRACTORS
    from synthdetect.train.registry import TRAINERS

    assert registered["kinds"] == model_base.KINDS.modules
    assert registered["extractors"] == EXTRACTORS.modules
    assert registered["trainers"] == TRAINERS.modules
    assert registered["prefixes"] == PREFIXES.modules


def test_a_photo_is_judged_without_torch_scipy_or_sklearn_and_a_thumbnail_loads_torch():
    code = (
        "import sys, numpy as np\n"
        "from PIL import Image\n"
        "from synthdetect import Detector\n"
        "heavy = lambda: sorted(m for m in ('torch', 'scipy', 'sklearn') if m in sys.modules)\n"
        "det = Detector.load('default')\n"
        "rng = np.random.default_rng(0)\n"
        "photo = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((320, 240), Image.BICUBIC)\n"
        "v = det(photo)\n"
        "print(v.models[0]['model'] if v.models else v.reasons[0], heavy())\n"
        "v = det(photo.resize((32, 32)))\n"
        "print(v.models[0]['model'], heavy())\n"
    )
    photo_line, thumbnail_line = run_python(code).strip().splitlines()
    assert photo_line.endswith("[]"), photo_line  # wild-v3, or its reason when the CLIP encoder is not installed
    assert thumbnail_line == "cifake-cnn ['torch']"


def test_a_route_to_a_model_that_is_not_there_fails_at_load(tmp_path):
    with pytest.raises(ModelPackageError, match="unknown model 'no-such-model'"):
        Detector.load(default_routed_to(tmp_path, "no-such-model"))


def test_a_routed_model_is_built_once_when_threads_first_need_it_together(monkeypatch):
    router = Detector.load("default").model
    built = []
    real_build = model_base.build_model

    def slow_build(package):
        built.append(package.name)
        time.sleep(0.2)  # long enough for every thread to arrive while the first is still building
        return real_build(package)

    monkeypatch.setattr("synthdetect.models.router.build_model", slow_build)
    got = []
    threads = [threading.Thread(target=lambda: got.append(router.member("cifake-cnn"))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert built == ["cifake-cnn"]
    assert len({id(model) for model in got}) == 1


def test_the_scan_fingerprint_is_the_same_before_and_after_the_routed_models_are_built():
    """A scan resumed in a process that has built more (or less) must still reuse its cached rows."""
    detector = Detector.load("default")
    before = detector_fingerprint(detector, None)
    detector.model.ready()
    assert detector_fingerprint(detector, None) == before
    routed = detector.model.model_named("cifake-cnn")
    assert routed.card == detector.model.member_cards["cifake-cnn"]
    assert routed.calibration.to_dict() == detector.model.member_cards["cifake-cnn"]["calibration"]


def test_a_route_to_a_model_of_an_unknown_kind_fails_at_load(tmp_path):
    routed = tmp_path / "odd"
    routed.mkdir()
    (routed / "model.json").write_text(json.dumps({"name": "odd", "kind": "no-such-kind", "version": "0.0.1"}))
    with pytest.raises(ModelPackageError, match="odd: unknown model kind 'no-such-kind'"):
        Detector.load(default_routed_to(tmp_path, str(routed)))


def test_a_routed_model_that_cannot_load_is_a_one_line_error_at_its_first_image(tmp_path):
    """Its card and hash are fine, so the router loads; the weights are not a torch file."""
    import hashlib

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "weights.pt").write_bytes(b"not a torch file" * 64)
    card = json.loads((BUILTIN_DIR / "cifake-cnn" / "model.json").read_text())
    card["name"] = "bad"
    card["files"] = {"weights": {"path": "weights.pt", "bytes": 1024,
                                 "sha256": hashlib.sha256((bad / "weights.pt").read_bytes()).hexdigest()}}
    (bad / "model.json").write_text(json.dumps(card))
    router = json.loads((BUILTIN_DIR / "default" / "model.json").read_text())
    router["routes"] = [{"max_short_side": 64, "model": str(bad)}, {"model": "wild-v3"}]
    (tmp_path / "router").mkdir()
    (tmp_path / "router" / "model.json").write_text(json.dumps(router))
    image = BUILTIN_DIR.parent / "samples" / "coffee-32px.jpg"
    done = subprocess.run([sys.executable, "-m", "synthdetect.cli", "detect", "-m", str(tmp_path / "router"), str(image)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad} (routed by default) could not be loaded: "), done.stderr
