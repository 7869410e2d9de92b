"""connserver: an HTTP/1.x origin server on Twisted that gets connections right."""
