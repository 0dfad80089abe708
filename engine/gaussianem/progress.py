"""Progress reporting for long engine work: a terminal bar, JSON lines, or nothing.

JSON mode (``--progress json``) prints one object per line on stdout, each with an
``event`` key (``start``, ``step``, ``epoch``, ``message``, ``done``, ``error``); the
ChimeraX bundle follows a training job through these lines. The bar mode prints the
other events on stderr but not ``error``: the command line prints the error itself, once.
"""

from __future__ import annotations

import json
import sys
import time

from gaussianem.errors import InputError


class Progress:
    def __init__(self, mode: str = "bar", enabled: bool = True):
        if mode not in ("bar", "json", "none"):
            raise InputError(f"unknown progress mode {mode!r}: expected bar, json or none")
        self.mode = mode if enabled else "none"
        self._bar = None

    def event(self, event: str, **fields) -> None:
        if self.mode == "json":
            print(json.dumps({"event": event, "time": time.time(), **fields}), flush=True)
        elif self.mode == "bar":
            if event == "step" and fields.get("steps_per_epoch"):
                if sys.stderr.isatty():
                    self._update_bar(fields)
            elif event == "error":
                self._close_bar()          # the command line prints the error (cli.main)
            elif event in ("epoch", "message", "done", "start"):
                self._close_bar()
                text = " ".join(f"{k}={_fmt(v)}" for k, v in fields.items())
                print(f"[{event}] {text}", file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        self.event("message", text=text)

    def _update_bar(self, f: dict) -> None:
        from tqdm import tqdm
        if self._bar is None or self._bar.desc != f"epoch {f['epoch']}":
            self._close_bar()
            self._bar = tqdm(total=f["steps_per_epoch"], desc=f"epoch {f['epoch']}",
                             file=sys.stderr, leave=False, initial=f["step"] - 1)
        self._bar.n = f["step"]
        self._bar.set_postfix(loss=f"{f['loss']:.4g}", pps=f"{f.get('particles_per_s', 0):.0f}")

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else v
