"""Browser client and demo pages served by the server."""

import json
from pathlib import Path

WEB_DIR = Path(__file__).parent
#: npm installs the browser builds roomlab serves here (`npm ci --prefix roomlab/web/vendor`);
#: they are never committed and never fetched at run time.
VENDOR_DIR = WEB_DIR / "vendor"
#: Twilio's JavaScript SDK, the version pinned in vendor/package.json, when it is installed.
TWILIO_VIDEO_JS = VENDOR_DIR / "node_modules" / "twilio-video" / "dist" / "twilio-video.min.js"
INSTALL_TWILIO_VIDEO = "npm ci --prefix roomlab/web/vendor"


def twilio_video_version() -> str | None:
    """The installed twilio-video's version, or None when it is not installed."""
    manifest = VENDOR_DIR / "node_modules" / "twilio-video" / "package.json"
    if not TWILIO_VIDEO_JS.exists() or not manifest.exists():
        return None
    return str(json.loads(manifest.read_text())["version"])
