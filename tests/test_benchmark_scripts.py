"""Benchmarks stop in one line without their data or on an image they could not judge; timings leave warm-up out."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from synth_data import write_manifest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                          timeout=180)


@pytest.mark.parametrize("script, args", [
    ("evidence_cost.py", ["{missing}"]),
    ("watermark_chance.py", ["{missing}"]),
    ("effnet_normalisation.py", ["--manifest", "{missing}/manifest.csv"]),
])
def test_missing_wild_dev_is_one_line_naming_the_manifest(tmp_path: Path, script: str, args: list[str]):
    missing = tmp_path / "no-wild-dev"
    run = _run(script, *(a.format(missing=missing) for a in args))
    assert run.returncode != 0 and run.stdout == ""
    assert run.stderr.strip() == f"no manifest at {missing / 'manifest.csv'} (wild-dev from ../shared is needed)"


def test_watermark_chance_without_an_image_large_enough_says_so_in_one_line(tmp_path: Path):
    write_manifest(tmp_path, {"a": (0, 3)}, size=24)  # all below the watermark probe's minimum side
    run = _run("watermark_chance.py", str(tmp_path))
    assert run.returncode != 0 and run.stdout == ""
    assert run.stderr.strip() == f"none of the 3 real images under {tmp_path} is readable and at least 256 px"


def test_evidence_cost_refuses_a_limit_below_one(tmp_path: Path):
    write_manifest(tmp_path, {"a": (1, 1)}, size=24)
    run = _run("evidence_cost.py", str(tmp_path), "--limit", "0")
    assert run.returncode != 0 and run.stderr.strip() == "--limit must be at least 1, not 0"


def test_evidence_cost_leaves_each_probes_first_call_out_of_the_timings(tmp_path: Path, monkeypatch, capsys):
    """A probe whose first call costs 1000 ms (imports, set-up) and every later one 1 ms is reported at 1 ms."""
    write_manifest(tmp_path, {"a": (2, 1)}, size=24, broken=1)
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import evidence_cost
    finally:
        sys.path.remove(str(BENCHMARKS))

    clock = {"ms": 0.0}
    calls: dict[str, int] = {}

    def fake_probes(image, names):
        for name in names:
            clock["ms"] += 1000.0 if name not in calls else 1.0
            calls[name] = calls.get(name, 0) + 1
        return []

    class FakeTime:
        @staticmethod
        def perf_counter() -> float:
            return clock["ms"] / 1000

        process_time = perf_counter

    monkeypatch.setattr(evidence_cost, "run_probes", fake_probes)
    monkeypatch.setattr(evidence_cost, "probe_names", lambda include_on_request=True:
                        ["slow_start", "other"] if include_on_request else ["slow_start"])
    monkeypatch.setattr(evidence_cost, "time", FakeTime)
    monkeypatch.setattr(sys, "argv", ["evidence_cost.py", str(tmp_path), "--limit", "4"])
    evidence_cost.main()
    result = json.loads(capsys.readouterr().out)
    for probe in ("slow_start", "other"):
        assert result["per_probe_wall"][probe] == {"median_ms": 1.0, "p90_ms": 1.0, "mean_ms": 1.0}
        assert result["per_probe_cpu"][probe]["mean_ms"] == 1.0
    assert result["default_total_wall"]["mean_ms"] == 1.0
    assert result["images"] == 3 and len(result["unreadable"]) == 1
    assert result["unreadable"][0].startswith("images/broken_0.png: ")


def test_detect_cifake_stops_on_an_image_it_could_not_judge_instead_of_counting_it(tmp_path: Path):
    """An error verdict is no judged image: a rate that counted it would overstate images per second."""
    import zipfile

    from synth_data import encode, make_image

    archive = tmp_path / "cifake.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for i in range(3):
            out.writestr(f"train/REAL/{i}.jpg", encode(make_image(0, i, 32), "JPEG"))
        out.writestr("train/FAKE/broken.jpg", b"\xff\xd8\xff not really a jpeg")
    run = _run("detect_cifake.py", "--zip", str(archive), "--n", "4", "--threads", "1")
    assert run.returncode != 0 and run.stdout == ""
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith(f"1 of 4 images from {archive} could not be judged, e.g. train/FAKE/broken.jpg: ")


def _import_benchmark(name: str):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


def _run_wild_peers(tmp_path: Path, monkeypatch, capsys, held_out_sources: tuple[str, ...]) -> tuple[dict, str]:
    """wild_peers.main on a small manifest with a fake detector and fake peers; each model's first call costs
    1000 ms on a fake clock (a lazy load), every later one 10 ms.  Returns the parsed JSON and the refused ref."""
    import synthdetect
    from synthdetect.train.datasets import open_dataset

    wild_peers = _import_benchmark("wild_peers")
    manifest = write_manifest(tmp_path, {"a": (2, 2), "b": (1, 1)}, size=24, broken=1)
    refs = [r.ref for r in open_dataset(manifest)]
    refused = refs[1]  # the detector returns an error verdict for this one
    clock = {"ms": 0.0}
    first_calls: set[str] = set()

    def spend(who: str) -> None:
        clock["ms"] += 10.0 if who in first_calls else 1000.0
        first_calls.add(who)

    class FakeTime:
        @staticmethod
        def perf_counter() -> float:
            return clock["ms"] / 1000

    class FakeVerdict:
        def __init__(self, ref: str):
            self.ok = ref != refused
            self.error = None if self.ok else "the model refused it"
            self.p_ai = 0.9 if self.ok and "/ai_" in ref else 0.1 if self.ok else None
            self.label = None if not self.ok else "ai" if self.p_ai > 0.5 else "human"

    class FakeDetector:
        def judge_loaded(self, items):
            spend("detector")
            return [FakeVerdict(ref) for ref, _ in items]

    def fake_peer(peer_name: str):
        class Peer:
            name = peer_name

            def __init__(self, cache, threads):
                pass

            def p_ai(self, rgb) -> float:
                spend(peer_name)
                return 0.5

        return Peer

    monkeypatch.setattr(synthdetect.Detector, "load", classmethod(lambda cls, name: FakeDetector()))
    monkeypatch.setattr(wild_peers, "OrganikaPeer", fake_peer("peer-1"))
    monkeypatch.setattr(wild_peers, "ClipProbePeer", fake_peer("peer-2"))
    monkeypatch.setattr(wild_peers, "time", FakeTime)
    held_out = tmp_path / "loso.json"
    held_out.write_text(json.dumps({"winner": "w", "held_out_p_ai": {
        r: 0.7 for r in refs if any(f"/{s}/" in r for s in held_out_sources)}}))
    monkeypatch.setattr(sys, "argv", ["wild_peers.py", "--manifest", str(manifest), "--held-out", str(held_out),
                                      "--threads", "1", "--peers-cache", str(tmp_path / "cache")])
    wild_peers.main()

    def no_bare_constants(constant):
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(capsys.readouterr().out, parse_constant=no_bare_constants), refused


def test_wild_peers_leaves_each_models_first_call_out_of_images_per_s(tmp_path: Path, monkeypatch, capsys):
    result, _ = _run_wild_peers(tmp_path, monkeypatch, capsys, ("a", "b"))
    assert result["models"]["synthdetect default (trained on wild-dev: in-sample)"]["images_per_s_all"] == 100.0
    assert result["models"]["peer-1"]["images_per_s_all"] == 100.0


def test_wild_peers_reports_an_error_verdict_as_a_failure_not_as_p_ai_one_half(tmp_path: Path, monkeypatch, capsys):
    result, refused = _run_wild_peers(tmp_path, monkeypatch, capsys, ("a", "b"))
    assert f"{refused}: the model refused it" in result["failed"] and len(result["failed"]) == 2
    assert result["images"] == 5
    assert result["models"]["synthdetect default (trained on wild-dev: in-sample)"]["pooled"]["n"] == 5


def test_wild_peers_gives_a_source_the_held_out_report_lacks_no_metrics(tmp_path: Path, monkeypatch, capsys):
    result, _ = _run_wild_peers(tmp_path, monkeypatch, capsys, ("a",))
    held = result["models"]["w leave-one-source-out (held-out)"]
    assert held["pooled"]["n"] == 3 and held["per_source"]["b"] == {"n": 0}


def test_serve_load_refuses_an_unknown_upload_kind_before_starting_the_server():
    """An unknown kind used to kill every client thread; the report then said 0 requests and exit 0."""
    run = _run("serve_load.py", "--mix", "valid=0.5,bogus=0.5", "--clients", "1", "--seconds", "0.5")
    assert run.returncode != 0 and run.stdout == ""
    assert run.stderr.strip() == ("--mix: 'bogus=0.5' is not KIND=WEIGHT with KIND one of valid, oversized, corrupt "
                                  "and WEIGHT >= 0")


def test_serve_load_names_why_the_server_did_not_start(tmp_path: Path):
    run = _run("serve_load.py", "--model", str(tmp_path / "no-such-model"), "--clients", "1", "--seconds", "0.5")
    assert run.returncode != 0 and run.stdout == ""
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith("server exited early (2): error: unknown model ") and "no-such-model" in line


def test_reencode_stability_reencodes_the_photo_as_the_detector_saw_it_and_lists_what_it_could_not_judge(
        tmp_path: Path, monkeypatch, capsys):
    """A portrait camera JPEG (landscape pixels, EXIF orientation 6) is re-encoded upright, as the detector saw
    it; an original the detector cannot judge is listed, not silently dropped."""
    import io

    from PIL import Image

    import synthdetect
    from synth_data import make_image, write_manifest_rows
    from synthdetect.images import load_image

    reencode_stability = _import_benchmark("reencode_stability")
    (tmp_path / "real").mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6
    make_image(0, 1, 64).resize((80, 60)).save(tmp_path / "real" / "portrait.jpg", quality=95, exif=exif)
    (tmp_path / "real" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    write_manifest_rows(tmp_path, [{"path": f"real/{name}", "label": "real", "source": "cam", "generator": ""}
                                   for name in ("portrait.jpg", "broken.jpg")])
    seen: dict[str, tuple[int, int]] = {}

    class FakeVerdict:
        def __init__(self, size):
            self.error = None if size else "cannot decode"
            small = bool(size) and min(size) < 56  # the small-image route: another model, another p_ai
            self.label, self.p_ai, self.reasons = "human", 0.4 if small else 0.2, ["r"]
            self.models = [{"model": "small" if small else "full"}]

    def fake_detector(source):
        try:
            size = load_image(source).size if isinstance(source, str) else Image.open(io.BytesIO(source)).size
        except Exception:  # noqa: BLE001 - the fake says what the real detector would: an error verdict
            size = None
        seen[source if isinstance(source, str) else f"bytes {len(seen)}"] = size
        return FakeVerdict(size)

    monkeypatch.setattr(synthdetect.Detector, "load", classmethod(lambda cls, name: fake_detector))
    monkeypatch.setattr(sys, "argv", ["reencode_stability.py", "--manifest", str(tmp_path / "manifest.csv")])
    reencode_stability.main()
    result = json.loads(capsys.readouterr().out)
    assert result["real_images"] == 1
    assert result["not_judged"] == ["cam/broken.jpg: cannot decode"]
    assert seen[str(tmp_path / "real" / "portrait.jpg")] == (60, 80)
    variants = [size for key, size in seen.items() if key.startswith("bytes")]
    assert len(variants) == len(result["variants"]) >= 5
    assert all(size[0] < size[1] for size in variants)  # upright, like the original the detector judged
    assert result["variants"]["png"]["abs_p_change_same_model"] == {"n": 1, "mean": 0.0, "max": 0.0}
    # judged by another model: no same-model change to report, which is not a change of 0
    assert result["variants"]["jpeg-short48"]["abs_p_change_same_model"] == {"n": 0, "mean": None, "max": None}


def test_effnet_crops_loso_keeps_its_progress_bar_off_stdout(tmp_path: Path):
    """stdout is the JSON alone (the crops progress bar went there, so `json.loads(stdout)` failed)."""
    from synthdetect.models.efficientnet_lite import locate_imagenet_weights

    try:
        locate_imagenet_weights("efficientnet-lite0")
    except Exception as exc:  # noqa: BLE001 - whatever says the weights are not installed here
        pytest.skip(f"EfficientNet-Lite0 ImageNet weights are not available: {exc}")
    manifest = write_manifest(tmp_path, {"a": (1, 1), "b": (1, 1)}, size=24, broken=1)
    run = _run("effnet_crops_loso.py", "--manifest", str(manifest), "--epochs", "1", "--threads", "1")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["images"] == 4 and len(result["unreadable"]) == 1
    assert sorted(result["per_source"]) == ["a", "b"]
    assert "crops" in run.stderr


def test_adapter_standin_without_the_published_configs_says_where_they_ship(tmp_path: Path):
    run = _run("adapter_standin.py", "--config-dir", str(tmp_path), "--images", str(tmp_path))
    assert run.returncode != 0 and run.stdout == ""
    assert run.stderr.strip() == f"no config.json in {tmp_path} (see this script's docstring for where they ship)"


@pytest.mark.parametrize("script, args, message", [
    ("cli_latency.py", ["--runs", "0"], "--runs must be at least 1, not 0"),
    ("train_speed.py", ["--steps", "0"], "--steps must be at least 1, not 0"),
])
def test_a_count_below_one_is_refused_in_one_line(script: str, args: list[str], message: str):
    """Not a statistics.median or ZeroDivisionError traceback after minutes of work."""
    run = _run(script, *args)
    assert run.returncode != 0 and run.stdout == "" and run.stderr.strip() == message
