"""Browser client and demo pages served by the server."""

from pathlib import Path

WEB_DIR = Path(__file__).parent
