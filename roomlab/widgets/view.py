"""What every roomlab view shares: a picture of its source's tables, kept up to date without
blocking the kernel, a static PNG for exported notebooks, and controls that are safe on any thread.

Threading (JupyterLab >= 4.4 with ipykernel 7 runs widget callbacks on subshell threads):

- One update task per view runs on the loop the view was made on (a notebook's kernel loop). About
  once a second it checks the row counts of the tables the view reads; when they changed, it reads
  the frames and draws them into a PNG on the renderer thread (matplotlib's Agg canvas, no pyplot,
  one lock for every view), then sets the widgets' values back on its own loop. Cells keep
  running meanwhile: a long `await sim.run(...)` in one cell, the views updating in another.
- Control callbacks (on whatever thread the kernel calls them) only hand a command to the room's
  loop (`Source.submit`, `call_soon_threadsafe`) and wake the update task the same way; they touch
  no matplotlib and set no widget value themselves.
- `stop()` (or the source finishing: the server stopped, the run ended, the client left) ends the
  task and freezes the last picture into the view's output, so that a saved notebook shows it.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import html
import io
import logging
import threading
import time
import uuid
import weakref
from abc import ABCMeta, abstractmethod
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextvars import Context
from dataclasses import dataclass
from typing import Any, ClassVar

import ipywidgets as widgets

from .source import Source, source_of

log = logging.getLogger(__name__)

#: Seconds between updates unless a view is given another period.
DEFAULT_PERIOD = 1.0
#: Shortest period a view accepts (each update reads whole tables and draws a figure).
MIN_PERIOD = 0.2

#: One lock around all drawing: matplotlib's font and text caches are shared by every figure.
RENDER_LOCK = threading.Lock()
_renderer: ThreadPoolExecutor | None = None
_live_views: weakref.WeakSet[View] = weakref.WeakSet()


def _renderer_thread() -> ThreadPoolExecutor:
    global _renderer
    if _renderer is None:
        _renderer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="roomlab-widgets")
    return _renderer


@dataclass(frozen=True)
class Picture:
    """One update of a view: its PNG and texts, and what it cost."""

    png: bytes
    summary: str
    """A short line of what the picture shows (for the status line)."""
    details: str
    """HTML: the numbers behind the picture, as a table."""
    versions: tuple[int, ...]
    read_s: float
    """Seconds spent reading frames and computing what to draw."""
    draw_s: float
    """Seconds spent drawing and encoding the PNG."""
    model: Any = None
    """What was drawn, for the controls that show the room's state (`View._shown`)."""


@dataclass(frozen=True)
class Command:
    """A command a control handed to the room."""

    time: float
    what: str
    thread: str
    """The thread the control's callback ran on (a subshell's under JupyterLab >= 4.4)."""


class _ViewMeta(type(widgets.VBox), ABCMeta):  # type: ignore[misc]
    """A widget's traitlets metaclass that also refuses to make a view whose hooks are missing."""


class View(widgets.VBox, metaclass=_ViewMeta):
    """A live picture of a source's telemetry. Subclasses say which tables they read (`tables`),
    what they compute from them (`_read`), how they draw it (`_draw`) and what controls they have."""

    css_class: ClassVar[str] = "roomlab-view"
    title: ClassVar[str] = "view"
    #: tables whose growth makes the view redraw
    tables: ClassVar[tuple[str, ...]] = ()
    figsize: ClassVar[tuple[float, float]] = (10.0, 5.0)
    dpi: ClassVar[int] = 80

    def __init__(self, source: Any, *, room: str | None = None, period: float = DEFAULT_PERIOD) -> None:
        if not period >= MIN_PERIOD:
            raise ValueError(f"period must be at least {MIN_PERIOD} seconds, got {period!r}")
        self.source: Source = source_of(source, room)
        self.period = float(period)
        self.png = b""
        #: updates shown so far
        self.updates = 0
        #: (read_s, draw_s) of the last updates: what a view costs per update
        self.timings: deque[tuple[float, float]] = deque(maxlen=200)
        #: commands the controls handed to the room, oldest first
        self.commands: list[Command] = []
        self._versions: tuple[int, ...] | None = None
        self._summary = ""
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopped = False
        self._force = False
        self._display_ids: list[str] = []
        self.status = widgets.HTML()
        self.status.add_class("roomlab-status")
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%", height="auto"))
        self.image.add_class("roomlab-figure")
        self.details = widgets.HTML()
        self.details.add_class("roomlab-details")
        table = widgets.Accordion(children=[self.details], titles=("numbers",), selected_index=None)
        self.feedback = widgets.HTML()
        self.feedback.add_class("roomlab-feedback")
        controls = self._controls()
        children = [self.status, self.image, table]
        if controls:
            children += [*controls, self.feedback]
        super().__init__(children=children)
        self.add_class("roomlab-view")
        self.add_class(self.css_class)
        self.refresh()
        if self.source.live and not self.source.finished():
            self._start()
        else:
            self._stopped = True
            self._set_status()

    # what subclasses provide ----------------------------------------------------------------
    @abstractmethod
    def _read(self) -> Any:
        """Read the source's frames and compute what to draw (runs on the renderer thread)."""

    @abstractmethod
    def _draw(self, figure: Any, model: Any) -> None:
        """Draw `model` on `figure` (a matplotlib Figure on an Agg canvas)."""

    def _describe(self, model: Any) -> tuple[str, str]:
        """A one-line summary and an HTML table of the numbers behind the picture."""
        return "", ""

    def _controls(self) -> list[widgets.Widget]:
        """Widgets that change the running room (none by default)."""
        return []

    def _shown(self, model: Any) -> None:
        """A picture of `model` is shown: controls may show the room's state from it (on the view's loop)."""

    def _link_controls(self) -> list[widgets.Widget]:
        """Controls of the links the source can change (`link_controls`), none for a saved run."""
        from .controls import LinkControls

        identities = self.source.links() if self.source.live else []
        if not identities:
            return []
        self.link_controls = LinkControls(self, identities)
        return [self.link_controls]

    # updating -------------------------------------------------------------------------------
    @property
    def live(self) -> bool:
        """Whether the view is following a running room."""
        return self._task is not None and not self._stopped

    def refresh(self) -> None:
        """Update now, whether or not the tables changed (in the calling thread)."""
        self._show(self._picture(force=True))

    def _picture(self, force: bool) -> Picture | None:
        versions = self.source.versions(self.tables)
        with RENDER_LOCK:
            if not force and versions == self._versions:
                return None
            self._versions = versions
            started = time.perf_counter()
            model = self._read()
            read = time.perf_counter()
            png = self._render(model)
            drawn = time.perf_counter()
        summary, details = self._describe(model)
        return Picture(png, summary, details, versions, read - started, drawn - read, model)

    def _render(self, model: Any) -> bytes:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=self.figsize, dpi=self.dpi)
        FigureCanvasAgg(figure)
        self._draw(figure, model)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()

    def _show(self, picture: Picture | None) -> None:
        if picture is None:
            return
        if picture.png != self.png:
            self.png = picture.png
            self.image.value = picture.png
        if picture.details != self.details.value:
            self.details.value = picture.details
        self._summary = picture.summary
        self.updates += 1
        self.timings.append((picture.read_s, picture.draw_s))
        self._set_status()
        self._shown(picture.model)

    def _set_status(self) -> None:
        if not self.source.live:
            state = self.source.label
        elif self.live:
            state = f"{self.source.label} · live, updated {time.strftime('%H:%M:%S')}"
        else:
            state = f"{self.source.label} · stopped"
        summary = f" · {html.escape(self._summary)}" if self._summary else ""
        self.status.value = f"<b>{html.escape(self.title)}</b> · {html.escape(state)}{summary}"

    def _start(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._stopped = True  # no event loop here (a plain script): refresh() by hand
            return
        self._loop = loop
        self._wake = asyncio.Event()
        # a context of its own: what the task sends belongs to no cell in particular (the kernel then
        # routes it to the latest one, where a saved notebook records the frozen last picture)
        self._task = loop.create_task(self._follow(), name=f"roomlab {type(self).__name__}", context=Context())
        _live_views.add(self)
        self._set_status()

    async def _follow(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wake is not None
        busy = 0.0
        try:
            while not self._stopped:
                # one update a period, start to start; but the renderer rests at least as long as it
                # worked, so that a slow figure takes half a core at most
                try:
                    await asyncio.wait_for(self._wake.wait(), max(self.period - busy, busy))
                except TimeoutError:
                    pass
                self._wake.clear()
                started = loop.time()
                finished = self.source.finished()
                force, self._force = self._force or finished, False
                picture = await loop.run_in_executor(_renderer_thread(), self._picture, force)
                if not self._stopped:
                    self._show(picture)
                busy = loop.time() - started
                if finished:
                    break
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a view must never break the kernel it runs in
            log.exception("%s stopped updating", type(self).__name__)
            self._summary = f"stopped on an error: {type(exc).__name__}: {exc}"
        finally:
            self._task = None
            self.stop()

    def _poke(self, force: bool = False) -> None:
        """Wake the update task now (from any thread)."""
        self._force = self._force or force
        self._call_in_loop(lambda: self._wake.set() if self._wake is not None else None)

    def _call_in_loop(self, fn: Any) -> None:
        """Run `fn` on the view's loop, where its widgets are set (from any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running() or _in_thread_of(loop):
            fn()
        else:
            loop.call_soon_threadsafe(fn)

    def stop(self) -> None:
        """Stop updating (from any thread). The view draws the rows that came since its last
        picture, and that last picture stays: in the view, and in its output of a saved notebook."""
        already = self._stopped
        self._stopped = True
        task = self._task
        if task is not None and not task.done():
            loop = task.get_loop()
            if _in_thread_of(loop) or not loop.is_running():
                task.cancel()
            elif not loop.is_closed():
                loop.call_soon_threadsafe(task.cancel)
        _live_views.discard(self)
        if already and task is None:
            return
        self._call_in_loop(self._finish)

    def _finish(self) -> None:
        try:
            self._show(self._picture(force=False))
        except Exception:  # the error is in the status line already, or the source is gone
            log.debug("%s: no last picture", type(self).__name__, exc_info=True)
        self._set_status()
        self._freeze()

    # commands -------------------------------------------------------------------------------
    def _command(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> None:
        """Hand `fn(*args, **kwargs)` to the room for a control (any thread), and say so."""
        self.commands.append(Command(time.time(), what, threading.current_thread().name))
        try:
            fn(*args, **kwargs)
        except (ValueError, RuntimeError) as exc:
            self._say(f"not done: {exc}", error=True)
            return
        self._say(f"sent: {what}")
        self._poke()

    def _say(self, text: str, error: bool = False) -> None:
        colour = "crimson" if error else "#555"
        markup = f'<span style="color:{colour}">{html.escape(text)}</span>'
        self._call_in_loop(lambda: setattr(self.feedback, "value", markup))

    # display --------------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        bundle["text/plain"] = repr(self)
        if self.png:
            bundle["image/png"] = base64.b64encode(self.png).decode("ascii")
        return bundle

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display_id = uuid.uuid4().hex
        self._display_ids.append(display_id)
        display(self._repr_mimebundle_(), raw=True, display_id=display_id)

    def _freeze(self) -> None:
        """Put the last picture into every output that displays this view (for saved notebooks)."""
        if not self._display_ids:
            return
        from IPython import get_ipython
        from IPython.display import update_display

        if get_ipython() is None:
            return
        for display_id in self._display_ids:
            update_display(self._repr_mimebundle_(), raw=True, display_id=display_id)

    def __repr__(self) -> str:
        state = "live" if self.live else "static" if not self.source.live else "stopped"
        return f"<roomlab.widgets.{type(self).__name__} of {self.source.label}: {state}, {self.updates} updates>"


def _in_thread_of(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


@atexit.register
def _stop_views() -> None:
    """The kernel is going away: end every view's task without a warning about pending tasks."""
    for view in list(_live_views):
        view._stopped = True
        task = view._task
        if task is not None and not task.done():
            task._log_destroy_pending = False  # type: ignore[attr-defined]
