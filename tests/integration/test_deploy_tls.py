"""The TLS variant of the compose deployment: deploy/docker-compose.tls.yml over
docker-compose.yml, validated by a real compose implementation (as test_deploy.py does for the
base file), and checked against what `strom certs create` writes for its services."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from strom.client.properties import read_client_properties
from strom.client.tls import SecurityOptions
from strom.node.config import build_config

ROOT = Path(__file__).resolve().parents[2]
FILES = ["-f", str(ROOT / "docker-compose.yml"), "-f", str(ROOT / "deploy/docker-compose.tls.yml")]
MOUNT = "/etc/strom/tls"


@pytest.fixture(scope="module")
def merged() -> dict[str, dict[str, object]]:
    tool = shutil.which("docker-compose")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is missing: .ci/run must install it (apt docker-compose)")
        pytest.skip("docker-compose not installed (apt-get install docker-compose)")
    result = subprocess.run(
        [tool, *FILES, "config"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    return {name: s for name, s in services.items() if name.startswith("strom")}


def test_every_listener_serves_mutual_tls(merged: dict[str, dict[str, object]]) -> None:
    assert len(merged) == 3
    for name, service in merged.items():
        env = {str(k): str(v) for k, v in dict(service["environment"]).items()}  # type: ignore[call-overload]
        config = build_config({}, environ=env)  # the container's configuration is valid
        for endpoint in config.listeners:
            assert config.security_protocols[endpoint.listener] == "SSL", endpoint
            assert config.listener_setting(endpoint.listener, "ssl.client.auth") == "required"
        assert config["ssl.certificate.location"] == f"{MOUNT}/{name}.crt"
        assert config["ssl.key.location"] == f"{MOUNT}/{name}.key"
        mounts = [str(v) for v in service["volumes"]]  # type: ignore[union-attr]
        assert f"{ROOT / 'deploy/tls'}:{MOUNT}:ro" in mounts
        # The health check asks the plain-HTTP admin listener: no certificate needed.
        test = list(service["healthcheck"]["test"])  # type: ignore[index]
        assert test[1:4] == ["strom", "node", "ready"]


def test_certs_create_writes_what_the_override_mounts(
    merged: dict[str, dict[str, object]], tmp_path: Path
) -> None:
    """The documented command, run for real: every file the services name exists, and each
    node's properties file (its health check) resolves inside the folder it sits in."""
    out = tmp_path / "tls"
    names = sorted(merged)
    command = [sys.executable, "-m", "strom.node.cli", "certs", "create", "--out", str(out)]
    for name in names:
        command += ["--node", name]
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    for name in names:
        for suffix in (".crt", ".key", ".properties"):
            assert (out / f"{name}{suffix}").exists()
        options = read_client_properties(out / f"{name}.properties")
        assert options["ssl_certfile"] == str(out / f"{name}.crt")
        SecurityOptions(**options).channel_credentials()
    assert read_client_properties(out / "client.properties")["ssl_certfile"].endswith(
        "strom-admin.crt"
    )
    again = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "already holds a CA" in again.stderr
