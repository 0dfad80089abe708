"""Text-only user interface for ChimeraX without a GUI (``--nogui``, embedded sessions).

Written by ChimeraX-GaussianEM's tools/install_chimerax.py: the ChimeraX 0.1.71 wheel
(ChimeraX 1.7.1 core) lacks this module, which ``Session()`` and
``python -m chimerax.core --nogui`` import.
"""

import sys
import weakref

from .logger import PlainTextLog
from .tasks import FINISHED, TERMINATED, Task

_LEVEL_NAMES = {
    PlainTextLog.LEVEL_INFO: "INFO",
    PlainTextLog.LEVEL_WARNING: "WARNING",
    PlainTextLog.LEVEL_ERROR: "ERROR",
    PlainTextLog.LEVEL_BUG: "BUG",
}
_COLORS = {}  # level name -> (start, end) escape codes, filled when colour is on


def _emit(kind, msg):
    start, end = _COLORS.get(kind, ("", ""))
    text = msg if msg.endswith("\n") else msg + "\n"
    if _COLORS:
        sys.stdout.write(f"{start}{text}{end}")
    else:
        sys.stdout.write(f"{kind}:\n{text}")
    sys.stdout.flush()


class NoGuiLog(PlainTextLog):
    """Print log messages and primary status messages on standard output."""

    def log(self, level, msg):
        _emit(_LEVEL_NAMES.get(level, "INFO"), msg)
        return True

    def status(self, msg, color, secondary):
        if msg and not secondary:
            _emit("STATUS", msg)
        return True


class UI:
    """The user interface of a session without a GUI (one per process)."""

    _instance = None

    def __new__(cls, session):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
            cls._instance._queue = None
            cls._instance._qt_app = None
        ui = cls._instance
        # The latest session owns the UI (tests may build more than one).
        ui._session = weakref.ref(session)
        ui.is_gui = False
        ui.has_graphics = False
        ui.stereo = False
        ui.autostart_tools = False
        return ui

    @classmethod
    def instance(cls):
        return cls._instance

    def initialize_color_output(self, color_output):
        """Colour log text when asked, or by default on a terminal (needs colorama)."""
        if not (color_output or (color_output is None and sys.stdout.isatty())):
            return
        try:
            from colorama import Fore, Style
        except ImportError:
            return
        reset = Style.RESET_ALL
        _COLORS.update({
            "INFO": (Fore.GREEN, reset), "WARNING": (Fore.YELLOW, reset),
            "ERROR": (Fore.RED, reset), "BUG": (Fore.RED + Style.BRIGHT, reset),
            "STATUS": (Fore.MAGENTA, reset),
        })

    def initialize_offscreen_rendering(self):
        """Render with OSMesa; without it the session runs with has_graphics False."""
        session = self._session()
        from chimerax import graphics
        try:
            context = graphics.OffScreenRenderingContext()
        except Exception as e:  # libOSMesa missing or too old
            if not session.silent:
                session.logger.info(f"Offscreen rendering is not available: {e}")
            self.has_graphics = False
            return
        session.main_view.initialize_rendering(context)
        self.has_graphics = True
        self._start_offscreen_qt()

    def _start_offscreen_qt(self):
        # 2D labels draw their text with Qt; an offscreen QApplication is enough.
        try:
            from PyQt6.QtWidgets import QApplication
        except ImportError:
            return
        if QApplication.instance() is None:
            self._qt_app = QApplication(["ChimeraX", "-platform", "offscreen"])

    def splash_info(self, message, splash_step=None, num_splash_steps=None):
        if splash_step is None:
            print(message, file=sys.stderr)
        else:
            print(f"{100 * splash_step / num_splash_steps:.2f}% done: {message}",
                  file=sys.stderr)

    def build(self):
        pass  # nothing to build without a GUI

    def quit(self):
        import os
        session = self._session()
        session.logger.status("Exiting ...", blank_after=0)
        session.logger.clear()  # stop the status timers
        sys.exit(os.EX_OK)

    def event_loop(self):
        """Read commands from standard input until end of file."""
        from queue import Queue
        self._queue = Queue()
        reader = _Input(self._session())
        reader.start()
        try:
            while reader.state not in (FINISHED, TERMINATED):
                func, args, kw = self._queue.get()
                try:
                    func(*args, **kw)
                finally:
                    self._queue.task_done()
        finally:
            self._queue = None

    def thread_safe(self, func, *args, **kw):
        """Run func in the main thread: queued while the event loop runs, else now."""
        if self._queue is not None:
            self._queue.put((func, args, kw))
        else:
            func(*args, **kw)


class _Input(Task):
    """Reads command lines in a thread and runs them in the main thread."""

    SESSION_ENDURING = True

    def __init__(self, session):
        super().__init__(session)
        from threading import Semaphore
        from .commands import Command
        self._command = Command(session)
        self._turn = Semaphore()  # one command at a time

    def run(self):
        ui = self.session.ui
        while True:
            self._turn.acquire()
            try:
                text = input("cmd> ")
            except EOFError:
                ui.thread_safe(self.session.logger.clear)  # wake the main loop
                break
            ui.thread_safe(self._execute, text)

    def _execute(self, text):
        from . import errors
        logger = self.session.logger
        try:
            if text.strip():
                self._command.run(text.strip())
        except errors.NotABug as e:
            logger.error(str(e))
        except Exception:
            import traceback
            logger.bug(traceback.format_exc())
        finally:
            self._turn.release()

    def take_snapshot(self, session, flags):
        return None

    @staticmethod
    def restore_snapshot(session, data):
        return None
