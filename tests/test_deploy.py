"""deploy/: the Raspberry Pi installer, the systemd unit, the Home Assistant examples.

``install.sh --destdir ROOT`` stages every file under ROOT and only prints the commands that
would change the running system (apt-get, useradd, chown, systemctl), so these tests run the
real script, with a real virtualenv and a real pip, without touching this machine. The
package is installed from a wheel built once from this checkout, with ``--no-index
--no-deps`` (no network, seconds not minutes).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomllib

from tests.paths import REPO

DEPLOY = REPO / "deploy"
INSTALL = DEPLOY / "install.sh"
UNIT = DEPLOY / "genre-edge.service"
PIP_OFFLINE = ["--pip-args", "--no-index --no-deps"]


def install_sh(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["bash", str(INSTALL), *map(str, args)], capture_output=True,
                            text=True, timeout=300, cwd=REPO)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under root (files with their bytes), bytecode caches left out."""
    out: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        if "__pycache__" in path.parts:
            continue
        rel = str(path.relative_to(root))
        out[rel] = path.read_bytes() if path.is_file() and not path.is_symlink() else None
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of this checkout, built from a copy so the checkout gets no build/ or egg-info."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("firmware_py", "training", "converter"):
        shutil.copytree(REPO / name, src / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    has_setuptools = subprocess.run([sys.executable, "-c", "import setuptools, wheel"],
                                    capture_output=True).returncode == 0
    isolation = ["--no-build-isolation"] if has_setuptools else []
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", *isolation,
         "--wheel-dir", str(work / "dist"), str(src)],
        check=True, capture_output=True, timeout=300,
    )
    (built,) = (work / "dist").glob("genre_edge-*.whl")
    return built


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Iterator[tuple[Path, str]]:
    """One default install staged into a temporary root: (root, installer output)."""
    root = tmp_path_factory.mktemp("root")
    result = install_sh("--destdir", root, "--source", wheel, *PIP_OFFLINE)
    yield root, result.stdout


# -- install -----------------------------------------------------------------------------
def test_files_land_where_expected(staged: tuple[Path, str]) -> None:
    root, output = staged
    venv = root / "opt/genre-edge"
    assert (venv / "pyvenv.cfg").is_file()
    entry = venv / "bin/genre-edge"
    assert os.access(entry, os.X_OK)
    # The console script runs from the staged virtualenv (--version needs no numpy).
    version = subprocess.run([str(entry), "--version"], capture_output=True, text=True,
                             timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("genre-edge "), version

    config = root / "etc/genre-edge/config.toml"
    assert config.read_bytes() == (DEPLOY / "config.example.toml").read_bytes()
    tomllib.loads(config.read_text())  # the example is valid TOML
    # It may hold the MQTT password: not world-readable.
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o750

    unit = root / "etc/systemd/system/genre-edge.service"
    assert unit.read_text().rstrip("\n") == UNIT.read_text().rstrip("\n")  # default paths
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644

    # Nothing outside the staging root was run: the system commands are only printed.
    for command in ("useradd --system", "usermod -a -G audio genre-edge",
                    "chown root:genre-edge /etc/genre-edge", "systemctl daemon-reload",
                    "systemctl enable genre-edge.service", "systemctl restart genre-edge.service"):
        assert f"skip (--destdir): {command}" in output, command
    assert sorted(p.name for p in root.iterdir()) == ["etc", "opt"]


def test_unit_runs_listen_with_the_config_and_is_hardened() -> None:
    text = UNIT.read_text()
    service = text.split("[Service]", 1)[1].split("[Install]", 1)[0]
    keys: dict[str, list[str]] = {}
    for line in service.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            keys.setdefault(key, []).append(value)
    assert keys["ExecStart"] == [
        "/opt/genre-edge/bin/genre-edge listen --config /etc/genre-edge/config.toml"]
    assert keys["Restart"] == ["always"]
    assert keys["User"] == ["genre-edge"] and keys["SupplementaryGroups"] == ["audio"]
    for key, value in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                       ("ProtectHome", "yes"), ("PrivateTmp", "yes"),
                       ("CapabilityBoundingSet", ""), ("DevicePolicy", "closed")]:
        assert keys[key] == [value], key
    assert "char-alsa rw" in keys["DeviceAllow"]  # the microphone
    assert keys["StateDirectory"] == ["genre-edge"]  # its only writable place
    assert "WantedBy=multi-user.target" in text


def test_second_run_keeps_the_config_and_uninstall_removes_the_rest(
    tmp_path: Path, wheel: Path
) -> None:
    options = ["--destdir", tmp_path, "--prefix", "/srv/ge", "--config-dir", "/etc/ge",
               "--source", wheel, *PIP_OFFLINE]
    install_sh(*options)
    unit = tmp_path / "etc/systemd/system/genre-edge.service"
    assert "ExecStart=/srv/ge/bin/genre-edge listen --config /etc/ge/config.toml" in \
        unit.read_text()
    assert "/opt/genre-edge" not in unit.read_text()
    assert "EnvironmentFile=-/etc/ge/environment" in unit.read_text()
    config = tmp_path / "etc/ge/config.toml"
    config.write_text('log_level = "info"\n')  # the user's edit
    before = tree(tmp_path)

    again = install_sh(*options)
    assert "keeping the existing" in again.stdout
    assert "unit unchanged" in again.stdout
    assert config.read_text() == 'log_level = "info"\n'
    after = tree(tmp_path)
    assert after.keys() == before.keys()
    # Same files, same bytes, except pip's install records (RECORD/INSTALLER/REQUESTED)
    # that a reinstall rewrites.
    changed = [p for p in after if after[p] != before[p] and ".dist-info/" not in p]
    assert changed == []

    # A unit edited by hand (or from an older version) is put back.
    unit.write_text(unit.read_text().replace("Restart=always", "Restart=no"))
    third = install_sh(*options)
    assert "writing" in third.stdout and "Restart=always" in unit.read_text()

    gone = install_sh("--destdir", tmp_path, "--prefix", "/srv/ge", "--config-dir", "/etc/ge",
                      "--uninstall")
    assert "skip (--destdir): systemctl disable --now genre-edge.service" in gone.stdout
    assert not (tmp_path / "srv/ge").exists() and not unit.exists()
    assert config.read_text() == 'log_level = "info"\n'  # kept unless --purge
    # Uninstalling again is fine.
    install_sh("--destdir", tmp_path, "--prefix", "/srv/ge", "--config-dir", "/etc/ge",
               "--uninstall")

    purged = install_sh("--destdir", tmp_path, "--prefix", "/srv/ge", "--config-dir",
                        "/etc/ge", "--uninstall", "--purge")
    assert "skip (--destdir): userdel genre-edge" in purged.stdout
    assert not (tmp_path / "etc/ge").exists()
    assert [p for p in tmp_path.rglob("*") if not p.is_dir()] == []


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    result = install_sh("--destdir", tmp_path, "--dry-run")
    assert list(tmp_path.iterdir()) == []
    out = result.stdout
    assert "dry run" in out
    assert re.search(rf"\+ \S*python3? -m venv {re.escape(str(tmp_path))}/opt/genre-edge", out)
    assert f"+ install -m 0640 {DEPLOY}/config.example.toml {tmp_path}/etc/genre-edge/" \
           "config.toml" in out
    assert "skip (--destdir): systemctl enable genre-edge.service" in out
    # A requirement from an index: the extras go after the name, not the version.
    pinned = install_sh("--destdir", tmp_path, "--dry-run", "--no-apt", "--source",
                        "genre-edge==0.1.0").stdout
    assert "install --quiet genre-edge\\[files\\]==0.1.0" in pinned
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, words", [
    (["--bogus"], "unknown option '--bogus'"),
    (["--prefix", "opt/x"], "--prefix must be an absolute path"),
    (["--prefix", "/opt/my dir"], "--prefix may hold only"),
    (["--prefix", "/usr"], "is a system directory"),
    (["--purge"], "--purge only goes with --uninstall"),
    (["--prefix"], "--prefix needs a value"),
])
def test_bad_options_are_one_line_errors(tmp_path: Path, args: list[str], words: str) -> None:
    result = install_sh("--destdir", tmp_path, *args, check=False)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and words in result.stderr, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_uninstall_never_deletes_what_is_not_a_virtualenv(tmp_path: Path) -> None:
    precious = tmp_path / "opt/genre-edge/data.txt"
    precious.parent.mkdir(parents=True)
    precious.write_text("keep me")
    result = install_sh("--destdir", tmp_path, "--uninstall", check=False)
    assert result.returncode == 2 and "not a virtualenv" in result.stderr
    assert precious.read_text() == "keep me"


def test_install_refuses_a_prefix_that_is_not_a_virtualenv(tmp_path: Path) -> None:
    (tmp_path / "opt/genre-edge").mkdir(parents=True)
    (tmp_path / "opt/genre-edge/data.txt").write_text("keep me")
    result = install_sh("--destdir", tmp_path, "--no-apt", "--source", "/nonexistent",
                        check=False)
    assert result.returncode == 2 and "is not a virtualenv" in result.stderr


# -- static checks -------------------------------------------------------------------------
def test_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if not shellcheck:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    result = subprocess.run([shellcheck, "--severity=style", str(INSTALL)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _verifiable_unit(staged: tuple[Path, str], tmp_path: Path) -> Path:
    # systemd-analyze checks that ExecStart exists: point it at the staged virtualenv.
    root, _ = staged
    text = (root / "etc/systemd/system/genre-edge.service").read_text()
    unit = tmp_path / "genre-edge.service"
    unit.write_text(text.replace("/opt/genre-edge/", f"{root}/opt/genre-edge/"))
    return unit


def test_systemd_analyze_verify(staged: tuple[Path, str], tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze not installed (Debian package systemd)")
    unit = _verifiable_unit(staged, tmp_path)
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    # Unknown or misspelt keys are only warnings (exit 0): none may name our unit.
    assert "genre-edge.service" not in result.stderr, result.stderr


def test_systemd_analyze_security(staged: tuple[Path, str], tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze not installed (Debian package systemd)")
    unit = _verifiable_unit(staged, tmp_path)
    result = subprocess.run([analyze, "security", "--offline=yes", "--no-pager", str(unit)],
                            capture_output=True, text=True, timeout=60)
    if "--offline" in result.stderr or "unrecognized option" in result.stderr:
        pytest.skip("systemd-analyze security --offline needs systemd >= 250")
    match = re.search(r"Overall exposure level for genre-edge\.service: ([\d.]+)",
                      result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    # systemd's scale: 0 (locked down) to 10 (exposed); "OK" is below 2.0 or so.
    assert float(match.group(1)) <= 2.5, result.stdout


# -- Home Assistant examples ---------------------------------------------------------------
HA_EXAMPLES = sorted((DEPLOY / "homeassistant").glob("*.yaml"))
HA_DOC = REPO / "docs" / "homeassistant.md"
# States Home Assistant itself gives an entity, next to the ones genre-edge publishes.
HA_STATES = {"unavailable", "unknown"}


@pytest.fixture(scope="module")
def discovered() -> tuple[set[str], set[str]]:
    """(entity ids, genre sensor options) that MQTT discovery announces for 'livingroom'."""
    from firmware_py.bundle import load_bundle
    from firmware_py.mqtt import MqttPublisher, MqttSettings

    bundle = load_bundle(REPO / "firmware_py" / "models" / "default")
    publisher = MqttPublisher(MqttSettings(url="mqtt://127.0.0.1:1883", device_id="livingroom"),
                              labels=bundle.labels, model_name=bundle.name)
    entities, options = set(), set()
    for _topic, config in publisher.discovery_messages():
        entities.add(config["default_entity_id"])
        options.update(config.get("options", []))
    return entities, options


def _genre_states(text: str) -> set[str]:
    """Values the examples compare sensor.livingroom_genre with (to:/from:/state: lines)."""
    values: set[str] = set()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"\s*-?\s*(to|from|state):\s*(.*)$", line)
        if not m:
            continue
        context = "\n".join(lines[max(0, i - 4):i])
        if "sensor.livingroom_genre" not in context:
            continue  # a light's or media player's state
        value = m.group(2).strip()
        if value.startswith("["):
            values.update(v.strip() for v in value.strip("[]").split(","))
        elif value:
            values.add(value.strip('"'))
        else:  # a YAML list on the following lines
            for item in lines[i + 1:]:
                im = re.match(r"\s*-\s+([\w-]+)\s*$", item)
                if not im:
                    break
                values.add(im.group(1))
    return values


def test_home_assistant_examples_use_the_discovered_entities(
    discovered: tuple[set[str], set[str]]
) -> None:
    entities, options = discovered
    assert entities == {"sensor.livingroom_genre", "sensor.livingroom_confidence",
                        "sensor.livingroom_level"}
    assert {"silence", "unknown"} <= options
    assert [p.name for p in HA_EXAMPLES] == ["automations.yaml", "dashboard-card.yaml"]
    used: set[str] = set()
    states: set[str] = set()
    for path in [*HA_EXAMPLES, HA_DOC]:
        text = path.read_text()
        assert "\t" not in text, f"{path.name}: YAML forbids tabs"
        used.update(re.findall(r"\bsensor\.livingroom_[a-z_]+", text))
        states |= _genre_states(text)
    assert used and used <= entities, used - entities
    assert {"classical", "silence", "unavailable"} <= states
    assert states <= options | HA_STATES, states - options - HA_STATES

    automations = (DEPLOY / "homeassistant" / "automations.yaml").read_text()
    ids = re.findall(r"^- id: (\S+)$", automations, re.M)
    assert len(ids) == len(set(ids)) >= 3
    assert "for: \"00:10:00\"" in automations and "media_player.media_pause" in automations


def test_examples_and_docs_name_no_network_addresses() -> None:
    """Only loopback and .local host names: nothing points at someone's real network."""
    paths = [*HA_EXAMPLES, HA_DOC, REPO / "docs" / "deploy.md", INSTALL, UNIT,
             DEPLOY / "config.example.toml"]
    for path in paths:
        text = path.read_text()
        ips = set(re.findall(r"\b\d{1,3}(?:\.\d{1,3}){3}\b", text)) - {"127.0.0.1"}
        assert not ips, f"{path.name}: {ips}"
        for url in re.findall(r"\b[a-z][a-z0-9+]*://[^\s\"'`)>]+", text):
            host = re.sub(r"^[a-z0-9+]+://", "", url).split("/")[0].rsplit(":", 1)[0]
            if host.startswith("host"):
                continue  # the placeholder in "mqtt://host[:port]"
            assert host in ("127.0.0.1", "localhost") or host.endswith(".local"), \
                f"{path.name}: {url}"
