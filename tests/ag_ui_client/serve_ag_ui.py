"""The rendered service with an agent whose tool waits for approval, over HTTP on a port.

Copied into a render with the default answers and sessions, and run in its environment:
`python serve_ag_ui.py PORT`.
"""

import sys

import uvicorn
from support_desk.runtime import AgentSpec, create_app, tool
from support_desk.settings import Settings


@tool(requires_approval=True)
def close_account(account: str) -> dict[str, object]:
    """Close an account, by its number; a person approves each closing first."""
    return {"account": account, "status": "closed"}


agent = AgentSpec(name="helper", system_prompt="Help.", tools=[close_account])
uvicorn.run(create_app(Settings(), agent), host="127.0.0.1", port=int(sys.argv[1]))
