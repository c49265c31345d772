"""Many models and deployments behind one address (``kingpost up``).

app.py              ASGI entry: invocations -> router -> pool -> replica; /admin/v1 -> admin
router.py           the URL grammar (host form, regional form, path form)
controller.py       Platform: state store <-> pools and traffic; the operations
promotion.py        atomic and rolling promotion, one per environment
traffic.py          where an environment's requests go (one pool, two while rolling)
pool.py             the replicas of a deployment in an environment: pick, park, scale
autoscaler.py       the scaling decision (pure)
replica.py          the Replica protocol the pool hands requests to
process_replica.py  the local replica: a supervised `kingpost serve` process
relay.py            HTTP relaying to a replica over proxy.upstream's pool
store.py            SQLAlchemy Core state: SQLite under --home, or PostgreSQL
bundle.py           a model directory as an archive, and its digest
admin.py            the admin API (FastAPI)
client.py           the admin API client the commands use
declarative.py      kingpost.yaml
commands.py         the CLI commands
up.py               `kingpost up`: the composition root
"""
