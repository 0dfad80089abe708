"""The Latent Explorer panel's player: stepping along a principal component, back and
forth with Loop, and the row of buttons under the sliders (a mixin of
:class:`~.panel.LatentPanel`, which owns the sliders: ``sliders``, ``slider_ticks``,
``set_pc_value``, ``pc_value``, ``reset``)."""

from __future__ import annotations

from Qt.QtCore import QTimer
from Qt.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QLabel, QPushButton

SLIDER_TICKS_PER_SD = 10        # slider resolution: 0.1 standard deviation


class PlayerMixin:
    """Play, Loop, Medoid/Mean and Fit domains; the timer that steps the player."""

    def _build_player(self, on_fit_domains) -> QHBoxLayout:
        player = QHBoxLayout()
        self.play_pc = QComboBox()
        for k in range(len(self.sliders)):
            self.play_pc.addItem(f"PC{k + 1}")
        self.play_button = QPushButton("Play")
        self.play_button.setCheckable(True)
        self.play_button.toggled.connect(lambda on: self.play() if on else self.stop())
        self.loop = QCheckBox("Loop")
        self.loop.setChecked(True)
        self.mean_button = QPushButton("Mean" if self.home_particle is None else "Medoid")
        if self.home_particle is not None:
            self.mean_button.setToolTip(f"Back to particle {self.home_particle}, the medoid: the particle "
                                        "nearest all the others in latent space")
        self.mean_button.clicked.connect(self.reset)
        player.addWidget(QLabel("Trajectory"))
        player.addWidget(self.play_pc)
        player.addWidget(self.play_button)
        player.addWidget(self.loop)
        player.addStretch(1)
        self.fit_button = None
        if on_fit_domains is not None:
            self.fit_button = QPushButton("Fit domains")
            self.fit_button.setToolTip("A copy of the atomic model at the state shown, its rigid domains fitted "
                                       "to the particles nearest that state (gaussianem fitdomains)")
            self.fit_button.clicked.connect(lambda _checked=False: on_fit_domains())
            player.addWidget(self.fit_button)
        player.addWidget(self.mean_button)
        return player

    def _start_timer(self, play_interval_ms) -> None:
        self.timer = QTimer(self)
        self.timer.setInterval(int(play_interval_ms))
        self.timer.timeout.connect(self._play_tick)

    @property
    def playing(self) -> bool:
        return self.timer.isActive()

    def play_range(self, pc: int) -> tuple[float, float]:
        """(low, high) sd the player steps between along PC ``pc``: its slider's range
        with ``pc_ranges``, else +-``play_range_sd``."""
        if self._pc_ranges is None:
            return -self.play_range_sd, self.play_range_sd
        lo, hi = self.slider_ticks[pc - 1]
        return lo / SLIDER_TICKS_PER_SD, hi / SLIDER_TICKS_PER_SD

    def play(self, pc: int | None = None) -> None:
        """Step along a PC from the low to the high end of :meth:`play_range` (back and
        forth with Loop)."""
        if not self.sliders:
            return
        if pc is not None:
            self.play_pc.setCurrentIndex(pc - 1)
        self._play_direction = 1
        pc = self.play_pc.currentIndex() + 1
        self.set_pc_value(pc, self.play_range(pc)[0])
        if not self.play_button.isChecked():
            self.play_button.blockSignals(True)
            self.play_button.setChecked(True)
            self.play_button.blockSignals(False)
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()
        if self.play_button.isChecked():
            self.play_button.blockSignals(True)
            self.play_button.setChecked(False)
            self.play_button.blockSignals(False)

    def _play_tick(self) -> None:
        pc = self.play_pc.currentIndex() + 1
        lo, hi = self.play_range(pc)
        now = self.pc_value(pc)
        end = hi if self._play_direction > 0 else lo
        if abs(now - end) < 1e-9:                  # at an end: back (Loop) or stop
            if not self.loop.isChecked():
                self.stop()
                return
            self._play_direction *= -1
            end = hi if self._play_direction > 0 else lo
        v = now + self._play_direction * self.play_step_sd
        self.set_pc_value(pc, min(v, end) if self._play_direction > 0 else max(v, end))
