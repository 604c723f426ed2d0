"""Who may ask a server bound to loopback: only requests whose Host header names this machine."""
from __future__ import annotations

import re

from fastapi.responses import JSONResponse

# The names of this machine a request to a loopback server may carry in its Host header (any port).
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
_HOST = re.compile(r"(\[[0-9a-f:.]*\]|[^:\[\]]*)(?::[0-9]{1,5})?")  # "name[:port]" or "[v6 address][:port]"


class ThisMachineOnly:
    """ASGI middleware for a server bound to loopback: answers only requests whose Host header names this machine.

    A page from anywhere, open in a browser on this machine, can have its own name re-pointed at
    127.0.0.1 (DNS rebinding) and then call this API as if it were the same site. Its requests
    still carry that name in their Host header, so they are refused (400).
    """

    def __init__(self, app, host: str):
        self.app = app
        bound = f"[{host}]" if ":" in host and not host.startswith("[") else host
        self.names = {*LOOPBACK_NAMES, bound.lower()}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        header = dict(scope["headers"]).get(b"host", b"").decode("latin-1").strip().lower()
        name = _HOST.fullmatch(header)
        if name is not None and name.group(1) in self.names:
            return await self.app(scope, receive, send)
        detail = (f"This server answers requests for this machine only, and the Host header {header[:60]!r} names "
                  "another; open it as http://127.0.0.1 or http://localhost with its port, or start it with "
                  "--host 0.0.0.0 to serve the network.")
        await JSONResponse({"detail": detail}, status_code=400)(scope, receive, send)
