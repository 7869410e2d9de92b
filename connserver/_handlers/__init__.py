"""
What answers requests: static files (and their compression), the
twisted.web adapter, the reverse proxy, routing, the status page and the
metrics.
"""
