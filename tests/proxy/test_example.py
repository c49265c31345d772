"""examples/custom-server serves as it is written."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import yaml

from kingpost.testing import ServerProcess, free_port
from tests.proxy.custom_servers import ROOT, server_env

EXAMPLE = ROOT / "examples" / "custom-server"


def test_the_custom_server_example_serves(tmp_path: Path) -> None:
    # The example listens on 8000; a copy on a free port keeps the test off shared ports.
    example = Path(shutil.copytree(EXAMPLE, tmp_path / "custom-server"))
    config = yaml.safe_load((example / "config.yaml").read_text())
    port = free_port()
    server = config["docker_server"]
    server["start_command"] = server["start_command"].replace("8000", str(port))
    server["server_port"] = port
    (example / "config.yaml").write_text(yaml.safe_dump(config))

    with ServerProcess(example, env=server_env()) as kingpost:
        reply = httpx.post(kingpost.url("/predict"), content=b'{"text": "a b c"}')
        assert reply.json() == {"greeting": "hello", "words": 3, "shout": "A B C"}
        with httpx.stream("GET", kingpost.url("/environments/production/sync/count?to=2")) as r:
            assert [line for line in r.iter_lines() if line] == ["data: 1", "data: 2"]
