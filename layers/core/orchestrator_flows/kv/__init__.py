"""The key-value plumbing the session store and the agents' breakers both stand on: one Redis
connection per process (`redis_connection`), or an embedded keyspace for local runs (`memory`).
Neither knows what its keys mean."""
