"""Operating the bridge: the HTTP endpoint, metrics, logging, GC settings."""
