"""`ocsight mcp`: usage analytics as an MCP server, for OpenCode (or any MCP client) to ask.

`answers` computes the documents from the index (through its typed reader, never a second
definition of a total), `scope` runs that query layer over a subset of sessions, `service` keeps
the index fresh and serialises access to it, and `server` is the MCP glue (the official SDK is
imported only here, when the command runs).
"""
