"""Which load balancers may tell us the client's address (X-Forwarded-For)."""

from __future__ import annotations

import ipaddress
from functools import lru_cache


class TrustedProxies:
    def __init__(self, spec: str) -> None:
        try:
            self.networks = tuple(ipaddress.ip_network(part.strip(), strict=False) for part in spec.split(",") if part.strip())
        except ValueError as error:
            raise SystemExit(f"WIDGETS_TRUSTED_PROXIES: {error}") from None
        self.trusts = lru_cache(maxsize=4096)(self._trusts)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def _trusts(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)
