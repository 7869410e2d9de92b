"""
The ``twistd connserver`` plugin: a name and a module, nothing else.

Twisted imports every module in ``twisted/plugins`` to find plugins, so this
one stays tiny and imports nothing of connserver; ``twistd`` imports
``connserver.tap`` only when ``connserver`` is the command.  There is
deliberately no ``__init__.py`` here (``twisted.plugins`` is Twisted's).
"""

from twisted.application.service import ServiceMaker

connserver = ServiceMaker(  # type: ignore[no-untyped-call]
    "connserver",
    "connserver.tap",
    "An HTTP/1.0 and HTTP/1.1 origin server that gets connections right.",
    "connserver",
)
