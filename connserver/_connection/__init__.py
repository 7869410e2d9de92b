"""
The life of one connection on Twisted: the protocol and its round loop, an
exchange per request, the pipeline, read and write flow, closing, the phase
timer, the factory and its registry, and the handler API (``Request``,
``Response``).
"""
