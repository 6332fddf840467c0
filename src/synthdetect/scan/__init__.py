"""Scanning folders and buckets of millions of images into a resumable results database.

``run_scan`` (local worker processes) and ``run_ray_scan`` (Ray Data) both
judge through :class:`synthdetect.Detector`, so a scan row holds the same
verdict as ``synthdetect detect``.
"""

from synthdetect.scan.engine import ScanOptions, run_scan
from synthdetect.scan.store import ResultStore, export

__all__ = ["ScanOptions", "run_scan", "ResultStore", "export"]
