"""A real Home Assistant core for the tests, built once and cached.

Home Assistant is installed from PyPI into its own virtualenv, which lives in a Debian 13
(trixie) root made with mmdebstrap from Debian packages: the Home Assistant releases that
understand what genre-edge's discovery and example automations use (``default_entity_id``,
2025.10; ``triggers:``/``actions:``, 2024.10) need Python >= 3.12, and Debian 12 has 3.11
(whose last Home Assistant is 2024.3.3). It runs there through ``chroot`` in a private mount
namespace, sharing this machine's network, so it reaches the test's mosquitto on loopback
and the test reaches its HTTP API on loopback.

    python -m tests.homeassistant build        # build the cached root (CI does this first)
    python -m tests.homeassistant path         # where it is

The root is ``$GENRE_EDGE_HA_ROOT``, else ``~/.cache/genre-edge-ha/<version>-<suite>``. The
requirements of every integration this Home Assistant sets up are installed at build time
and it runs with ``--skip-pip``: a test never installs anything. Building needs root (or
unprivileged user namespaces) for mmdebstrap and chroot.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
HA_VERSION = "2026.2.3"  # the newest release on trixie's Python 3.13 (2026.3 needs 3.14)
SUITE = "trixie"
# python3-dev and gcc: a few of Home Assistant's pinned dependencies (lru-dict) have no
# wheel for Python 3.13 and are compiled.
DEBIAN_PACKAGES = "python3,python3-venv,python3-dev,gcc,libc6-dev,ca-certificates"
VENV = "/opt/ha"
CONFIG_MOUNT = "/mnt/config"  # the test's config directory is bind-mounted here
STAMP = "genre-edge-ha.json"
#: Integrations the tests configure, besides those Home Assistant always sets up.
CONFIGURED = ("mqtt", "api", "http", "automation", "template", "input_boolean", "input_number")

# Runs inside the root with Home Assistant's python: the requirements of the integrations it
# sets up (bootstrap's defaults, the configured ones) and of their dependencies, transitively.
_REQUIREMENTS_SCRIPT = r"""
import json, sys
from pathlib import Path
import homeassistant
from homeassistant import bootstrap
components = Path(homeassistant.__file__).parent / "components"
todo = set(bootstrap.CORE_INTEGRATIONS) | set(bootstrap.DEFAULT_INTEGRATIONS) | set(sys.argv[1:])
seen, reqs = set(), set()
while todo:
    domain = todo.pop()
    seen.add(domain)
    manifest = components / domain / "manifest.json"
    if not manifest.is_file():
        continue
    m = json.loads(manifest.read_text())
    reqs.update(m.get("requirements", []))
    todo.update(set(m.get("dependencies", [])) - seen)
print("\n".join(sorted(reqs)))
"""


def default_root() -> Path:
    env = os.environ.get("GENRE_EDGE_HA_ROOT")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "genre-edge-ha" / f"{HA_VERSION}-{SUITE}"


def missing() -> str | None:
    """Why Home Assistant's root cannot be built or run here, or None."""
    for program in ("mmdebstrap", "unshare", "chroot"):
        if shutil.which(program) is None:
            return f"{program} is not installed (apt-get install mmdebstrap util-linux coreutils)"
    if os.geteuid() != 0:
        probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=30)
        if probe.returncode:
            return "needs root or unprivileged user namespaces (for chroot and bind mounts)"
    return None


def is_built(root: Path) -> bool:
    try:
        return json.loads((root / STAMP).read_text()).get("homeassistant") == HA_VERSION
    except (OSError, ValueError):
        return False


def chroot_command(root: Path, argv: list[str], binds: dict[str, Path] | None = None) -> list[str]:
    """``argv`` run in ``root`` (tools/in-root.sh: /dev, /proc and ``binds``, {in root: here})."""
    cmd = [str(REPO / "tools" / "in-root.sh"), str(root), "--env", "PIP_DISABLE_PIP_VERSION_CHECK=1"]
    for inside, outside in (binds or {}).items():
        cmd += ["--bind", f"{inside}={outside}"]
    return [*cmd, "--", *argv]


def _run(cmd: list[str], what: str) -> None:
    t0 = time.monotonic()
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if res.returncode:
        raise RuntimeError(f"{what} failed ({res.returncode}):\n{res.stdout[-4000:]}")
    print(f"  {what}: {time.monotonic() - t0:.0f} s", flush=True)


def build(root: Path | None = None) -> Path:
    """Build the root (Debian, virtualenv, Home Assistant, its integrations' requirements)."""
    root = Path(root or default_root())
    if is_built(root):
        return root
    t0 = time.monotonic()
    print(f"building Home Assistant {HA_VERSION} in {root} (once; cached)", flush=True)
    _run([str(REPO / "tools" / "debian-root.sh"), str(root), SUITE, "amd64", DEBIAN_PACKAGES],
         f"Debian {SUITE} root (mmdebstrap)")
    pip = [f"{VENV}/bin/pip", "install", "--quiet"]
    _run(chroot_command(root, ["python3", "-m", "venv", VENV]), "virtualenv")
    _run(chroot_command(root, [*pip, f"homeassistant=={HA_VERSION}"]), "pip install homeassistant")
    reqs = subprocess.run(
        chroot_command(root, [f"{VENV}/bin/python", "-c", _REQUIREMENTS_SCRIPT, *CONFIGURED]),
        capture_output=True, text=True, check=True,
    ).stdout.split()
    constraints = f"{VENV}/lib/python3.13/site-packages/homeassistant/package_constraints.txt"
    _run(chroot_command(root, [*pip, "--constraint", constraints, *reqs]),
         f"pip install the integrations' {len(reqs)} requirements")
    (root / STAMP).write_text(json.dumps({"homeassistant": HA_VERSION, "suite": SUITE,
                                          "requirements": reqs}, indent=1))
    print(f"  Home Assistant root built in {time.monotonic() - t0:.0f} s", flush=True)
    return root


class HomeAssistant:
    """One ``hass`` process on 127.0.0.1:``port`` with the config directory ``config_dir``."""

    def __init__(self, root: Path, config_dir: Path, port: int) -> None:
        self.root, self.config_dir, self.port = Path(root), Path(config_dir), int(port)
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.token: str | None = None
        self.log_file = self.config_dir / "hass.out"

    def log_text(self) -> str:
        text = ""
        for f in (self.log_file, self.config_dir / "home-assistant.log"):
            if f.exists():
                text += f.read_text(errors="replace")
        return text

    def start(self, timeout_s: float = 300.0) -> HomeAssistant:
        cmd = chroot_command(
            self.root,
            [f"{VENV}/bin/hass", "--config", CONFIG_MOUNT, "--skip-pip", "--log-no-color"],
            binds={CONFIG_MOUNT: self.config_dir},
        )
        out = open(self.log_file, "ab")  # noqa: SIM115 (handed to the child process)
        try:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=out, start_new_session=True)
        finally:
            out.close()
        self._onboard(timeout_s)
        return self

    def _onboard(self, timeout_s: float) -> None:
        """Create the owner through onboarding and get an access token (no UI, no YAML)."""
        client_id = f"{self.base}/"
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"hass exited with {self.proc.returncode}:\n"
                                   f"{self.log_text()[-4000:]}")
            try:
                code = self.request("POST", "/api/onboarding/users", {
                    "client_id": client_id, "name": "genre-edge test", "username": "test",
                    "password": "genre-edge-test-only", "language": "en"}, auth=False)
                break
            except (OSError, urllib.error.HTTPError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Home Assistant did not answer within {timeout_s} s:\n"
                                       f"{self.log_text()[-4000:]}") from None
                time.sleep(1.0)
        form = urllib.parse.urlencode({"grant_type": "authorization_code",
                                       "code": code["auth_code"], "client_id": client_id})
        req = urllib.request.Request(f"{self.base}/auth/token", data=form.encode(),
                                     method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            self.token = json.loads(resp.read())["access_token"]

    def request(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.base}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if auth:
            req.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(req, timeout=30) as resp:
            text = resp.read()
        return json.loads(text) if text else None

    def state(self, entity_id: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", f"/api/states/{entity_id}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def states(self) -> list[dict[str, Any]]:
        return self.request("GET", "/api/states")

    def add_mqtt(self, broker_port: int) -> dict[str, Any]:
        """The MQTT integration through its config flow, as a person adds it in the UI."""
        flow = self.request("POST", "/api/config/config_entries/flow",
                            {"handler": "mqtt", "show_advanced_options": False})
        if flow.get("step_id") != "broker":
            raise RuntimeError(f"unexpected MQTT config flow step: {flow}")
        result = self.request("POST", f"/api/config/config_entries/flow/{flow['flow_id']}",
                              {"broker": "127.0.0.1", "port": broker_port})
        if result.get("type") != "create_entry":
            raise RuntimeError(f"the MQTT config flow did not create an entry: {result}")
        return result

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def main(argv: list[str]) -> int:
    if argv[:1] == ["path"]:
        print(default_root())
        return 0
    if argv[:1] == ["build"]:
        why = missing()
        if why:
            print(f"cannot build Home Assistant's root: {why}", file=sys.stderr)
            return 2
        build()
        return 0
    print("usage: python -m tests.homeassistant build|path", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
