"""synthdetect: was this image made by a generative model? Answers with evidence."""

__version__ = "0.1.0"

from synthdetect.api import Detector  # noqa: E402
from synthdetect.verdict import Evidence, Verdict  # noqa: E402

__all__ = ["Detector", "Verdict", "Evidence", "__version__"]
