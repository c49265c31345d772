"""A Ray cluster owned by this process, as someone else's cluster would be.

Prints its GCS address on the first line, then answers commands read from stdin:
``apps`` prints the Serve applications as a JSON list; end of input stops Ray.
"""

from __future__ import annotations

import json
import os
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
    for line in sys.stdin:
        if line.strip() == "apps":
            from ray import serve

            try:
                apps = sorted(serve.status().applications)
            except Exception:  # Serve not started on this cluster
                apps = []
            print(json.dumps(apps), flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
