"""
Thin adapters to Twisted itself, used by every layer above the core: the
guarded reads of Twisted's private attributes, the default reactor, socket
options.
"""
