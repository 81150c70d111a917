"""The aiohttp application: authentication, Twilio-shaped errors, and the routes of the server."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from .. import __version__
from ..errors import RoomError
from ..protocol.signaling import PATH as SIGNALING_PATH
from ..web import INSTALL_TWILIO_VIDEO, TWILIO_VIDEO_JS, WEB_DIR
from .auth import Credentials, check_basic_auth
from .feed import TelemetryFeed
from .rest import RestApi
from .signaling import SignalingEndpoint
from .twilio import PATH as TWILIO_SIGNALING_PATH
from .twilio import TwilioSignalingEndpoint

log = logging.getLogger(__name__)

#: Largest request body the server reads (REST forms are small; larger bodies get 20001 / 413).
MAX_REQUEST_BYTES = 1024 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(error: RoomError) -> web.Response:
    headers = {"WWW-Authenticate": 'Basic realm="roomlab"'} if error.status == 401 else None
    return web.json_response(error.to_json(), status=error.status, headers=headers)


@web.middleware
async def twilio_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as Twilio's JSON error body, never as a traceback."""
    try:
        return await handler(request)
    except RoomError as error:
        return error_response(error)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {401: 20003, 404: 20404, 405: 20004}.get(exc.status, 20001)
        message = exc.reason
        if exc.status == 413:
            message = f"Request body too large (limit {MAX_REQUEST_BYTES} bytes)"
        return error_response(RoomError(code, message, exc.status))
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(RoomError(20500, "Internal Server Error", 500))


def basic_auth(credentials: Credentials) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/v1"):
            check_basic_auth(request.headers.get("Authorization"), credentials)
        return await handler(request)

    return middleware


async def index(request: web.Request) -> web.Response:
    origin = request.url.origin()
    return web.json_response(
        {
            "name": "roomlab",
            "version": __version__,
            "api": f"{origin}/v1",
            "signaling": f"{origin}{SIGNALING_PATH}",
            "twilio_signaling": f"{origin.with_scheme('ws')}{TWILIO_SIGNALING_PATH}",
        }
    )


async def twilio_video_js(request: web.Request) -> web.FileResponse:
    """The SDK's browser build, when npm has installed it (it is never fetched at run time)."""
    if not TWILIO_VIDEO_JS.exists():
        raise RoomError(20404, f"twilio-video is not installed here; install it with: {INSTALL_TWILIO_VIDEO}", 404)
    return web.FileResponse(TWILIO_VIDEO_JS)


def build_app(
    credentials: Credentials,
    rest: RestApi,
    signaling: SignalingEndpoint,
    twilio_signaling: TwilioSignalingEndpoint,
    feed: TelemetryFeed,
) -> web.Application:
    app = web.Application(middlewares=[twilio_errors, basic_auth(credentials)], client_max_size=MAX_REQUEST_BYTES)
    app.router.add_get("/", index)
    app.router.add_get(SIGNALING_PATH, signaling.handle)
    app.router.add_get(TWILIO_SIGNALING_PATH, twilio_signaling.handle)
    app.router.add_get("/v1/Telemetry", feed.handle)
    app.on_shutdown.append(feed.close)
    app.router.add_get("/web/twilio-video.min.js", twilio_video_js)
    app.router.add_static("/web/", WEB_DIR)
    rest.add_routes(app)
    return app
