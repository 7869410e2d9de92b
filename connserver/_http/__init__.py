"""
The pure HTTP/1.x core: the parser, framing, header fields and connection
options, the persistence policy, the response head, content coding,
forwarded fields, errors, records and the configuration.  Nothing in this
package imports ``twisted.internet`` (``tests/test_layering.py``).
"""
