"""``calibrate-route`` on a manifest whose images fail: the progress, the reasons and the refusal say so."""

from __future__ import annotations

from synthdetect.train.datasets import Record
from synthdetect.train.route_calibration import route_data_problem, score_thumbnails


def test_a_manifest_of_failing_images_finishes_its_progress_and_says_why_nothing_was_scored(tmp_path):
    (tmp_path / "text.jpg").write_text("not an image")
    records = [Record(str(tmp_path / "text.jpg"), 1, "s1"), Record(str(tmp_path / "missing.jpg"), 0, "s2")]
    seen = []
    scores = score_thumbnails(records, "cifake-cnn", progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (2, 2)  # the bar stood at 0/2 though every record had been tried
    assert scores.unreadable == [f"{tmp_path / 'text.jpg'}: not an image (the file contains text)",
                                 f"{tmp_path / 'missing.jpg'}: No such file or directory"]  # not "[Errno 2] ..."
    problem = route_data_problem(scores)
    assert problem.startswith("no thumbnail was scored") and "(images: 2 unreadable)" in problem
