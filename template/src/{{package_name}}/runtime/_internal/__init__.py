"""The runtime's implementation, owned by the template: import from `..runtime` instead.

Grouped by role:
- `http`: the app factory, routes, request and response bodies, the body limit, the docs page;
- `agent`: one chat turn around AutoGen, the conversation it continues, tools, history;
- `ops`: logging, the command line, test helpers;
- `features`: the optional features this service was rendered with, each one module;
- `settings`, `errors`, `context`, `dependencies`, `extensions`: shared by all of them.
"""
