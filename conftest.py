"""Environment for the whole test run (tests/ and the nbval notebooks), set before any kernel starts."""
import os
import tempfile
from pathlib import Path

os.environ.setdefault("FSSLIB_DATA", str(Path(tempfile.gettempdir()) / "fsslib-test-data"))
os.environ["FSSLIB_SMOKE"] = "1"  # notebooks pick tiny settings
os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may download
os.environ.setdefault("MPLBACKEND", "Agg")
