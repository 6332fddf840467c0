"""The REST service and the web page (``synthdetect serve``); needs the ``serve`` extra (FastAPI, uvicorn)."""
