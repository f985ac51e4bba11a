"""A real virtual audio device: a PulseAudio null sink whose monitor is a capture source.

Used through the ``virtual_microphone`` fixture in ``tests/test_virtual_audio.py``::

    mic = VirtualMicrophone(tmp_path).start()     # an ordinary pulseaudio daemon of its own
    env = {**os.environ, **mic.env}               # how a client (listen, paplay) reaches it
    mic.play_loop(wav)                            # paplay into the sink, again and again
    mic.unplug(); mic.plug()                      # unload / load the sink: the device goes away
    mic.stop()

The daemon runs as whoever runs the tests, with its own runtime directory, config and
socket under the test's directory: no system service, no session bus, nothing of the
machine's own sound set-up is touched. Programs reach it through PortAudio's ALSA host API
and ALSA's ``pulse`` plugin (libasound2-plugins): an ALSA PCM named :data:`PCM_NAME`,
defined in an ``asoundrc`` under ``XDG_CONFIG_HOME``, captures the sink's monitor. That is
the path a USB microphone behind PulseAudio or PipeWire takes on a desktop Pi.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

#: The ALSA PCM (and so the PortAudio device name) that captures the sink's monitor.
PCM_NAME = "genre_edge_virtual_mic"
SINK_NAME = "genre_edge_test_sink"
PACKAGES = "pulseaudio pulseaudio-utils libasound2-plugins"


def missing() -> str | None:
    """Why the virtual device cannot run here (a missing program or plugin), or None."""
    for program in ("pulseaudio", "pactl", "paplay"):
        if shutil.which(program) is None:
            return f"{program} is not installed (apt-get install {PACKAGES})"
    plugins = glob.glob("/usr/lib/*/alsa-lib/libasound_module_pcm_pulse.so") + glob.glob(
        "/usr/lib/alsa-lib/libasound_module_pcm_pulse.so")
    if not plugins:
        return f"ALSA's pulse plugin is not installed (apt-get install {PACKAGES})"
    return None


class VirtualMicrophone:
    """One pulseaudio daemon with a null sink at ``rate`` Hz, ``channels`` channels."""

    def __init__(self, workdir: Path, rate: int = 44100, channels: int = 2) -> None:
        self.workdir = Path(workdir)
        self.rate, self.channels = int(rate), int(channels)
        self.runtime = self.workdir / "run"
        self.home = self.workdir / "home"
        self.config = self.workdir / "config"
        self.socket = self.runtime / "native"
        self.log_file = self.workdir / "pulseaudio.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.module_id: str | None = None
        self._player: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """Environment for clients: the daemon's socket, and the ALSA config naming the PCM."""
        return {
            "PULSE_SERVER": f"unix:{self.socket}",
            "XDG_CONFIG_HOME": str(self.config),  # alsa-lib reads $XDG_CONFIG_HOME/alsa/asoundrc
            "PULSE_COOKIE": str(self.home / "cookie"),
        }

    def _daemon_env(self) -> dict[str, str]:
        return {**os.environ, **self.env, "HOME": str(self.home),
                "XDG_RUNTIME_DIR": str(self.runtime)}

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def start(self, timeout_s: float = 20.0) -> VirtualMicrophone:
        for d in (self.runtime, self.home, self.config / "alsa", self.config / "pulse"):
            d.mkdir(parents=True, exist_ok=True)
        self.runtime.chmod(0o700)
        script = self.workdir / "daemon.pa"
        # Anonymous auth on a socket in a 0700 directory: only this user reaches it.
        script.write_text(
            f"load-module module-native-protocol-unix auth-anonymous=1 socket={self.socket}\n"
        )
        (self.config / "alsa" / "asoundrc").write_text(
            f"pcm.{PCM_NAME} {{\n"
            "    type pulse\n"
            f'    server "unix:{self.socket}"\n'
            f'    device "{SINK_NAME}.monitor"\n'
            '    hint { show on description "genre-edge test: the virtual sink\'s monitor" }\n'
            "}\n"
        )
        log = open(self.log_file, "ab")  # noqa: SIM115 (handed to the child process)
        try:
            self.proc = subprocess.Popen(
                ["pulseaudio", "-n", "-F", str(script), "--daemonize=no", "--use-pid-file=no",
                 "--exit-idle-time=-1", "--disable-shm=yes", "--log-target=stderr",
                 "--log-level=notice"],
                stdout=log, stderr=log, env=self._daemon_env(), start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout_s
        while self.pactl("info", check=False).returncode != 0:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pulseaudio exited with {self.proc.returncode}:\n"
                                   f"{self.log_text()[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"pulseaudio did not answer within {timeout_s} s:\n"
                                   f"{self.log_text()[-2000:]}")
            time.sleep(0.1)
        self.plug()
        return self

    def pactl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(["pactl", *args], capture_output=True, text=True, timeout=20,
                             env=self._daemon_env())
        if check and res.returncode:
            raise RuntimeError(f"pactl {' '.join(args)} failed: {res.stderr.strip()}")
        return res

    def plug(self) -> None:
        """Create the sink (and so its monitor source): the microphone appears."""
        if self.module_id is None:
            out = self.pactl("load-module", "module-null-sink", f"sink_name={SINK_NAME}",
                             f"rate={self.rate}", f"channels={self.channels}", "format=float32le")
            self.module_id = out.stdout.strip()

    def unplug(self) -> None:
        """Remove the sink: streams on its monitor are killed, as when a USB card goes."""
        if self.module_id is not None:
            self.pactl("unload-module", self.module_id)
            self.module_id = None

    def play_loop(self, wav: Path) -> None:
        """Play ``wav`` into the sink again and again (also across unplug/plug) until stop."""
        self.stop_playing()
        loop = f'while :; do paplay --device={SINK_NAME} "$0" || sleep 0.2; done'
        self._player = subprocess.Popen(
            ["sh", "-c", loop, str(wav)], env=self._daemon_env(), start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def stop_playing(self) -> None:
        if self._player is not None and self._player.poll() is None:
            os.killpg(self._player.pid, signal.SIGKILL)
            self._player.wait(5)
        self._player = None

    def stop(self) -> None:
        self.stop_playing()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
