"""
Running a server: the service and its drain, listeners and TLS, the
supervisor and its workers, the access log.
"""
