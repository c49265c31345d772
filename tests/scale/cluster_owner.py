"""A Ray cluster owned by this process, as someone else's cluster would be.

Prints its GCS address on the first line and its Ray Client address
(``ray://127.0.0.1:PORT``) on the second, then answers commands read from stdin:
``apps`` prints the Serve applications as a JSON list; end of input stops Ray
(the Ray Client server too: it is started by Ray's own node code, which stops it).
"""

from __future__ import annotations

import json
import os
import socket
import sys

# Pinned to loopback like the clusters Kingpost starts (set before Ray is imported).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# A model that cannot load fails its deployment after one try, not three.
os.environ.setdefault("RAY_SERVE_MAX_PER_REPLICA_RETRY_COUNT", "1")

import ray


def main() -> None:
    context = ray.init(include_dashboard=False, num_cpus=2, log_to_driver=False)
    print(context.address_info["gcs_address"], flush=True)
    print(f"ray://127.0.0.1:{start_client_server()}", flush=True)
    for line in sys.stdin:
        if line.strip() == "apps":
            from ray import serve

            try:
                apps = sorted(serve.status().applications)
            except Exception:  # Serve not started on this cluster
                apps = []
            print(json.dumps(apps), flush=True)
    ray.shutdown()


def start_client_server() -> int:
    """A Ray Client server on 127.0.0.1 (what ``ray start --ray-client-server-port`` runs)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    node = ray._private.worker._global_node
    node._ray_params.ray_client_server_port = port
    node.start_ray_client_server()  # listed among the node's processes: ray.shutdown stops it
    return port


if __name__ == "__main__":
    main()
