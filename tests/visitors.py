"""Test helpers for verified visitors: a site's key pairs, their public JWKs, and tokens signed as a site would."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm


@dataclass(frozen=True)
class SiteKey:
    """A site's private key and the public JWK it registers under `kid`."""

    kid: str
    alg: str
    private: Any

    @classmethod
    def generate(cls, alg: str = "ES256", kid: str | None = None) -> SiteKey:
        private = ec.generate_private_key(ec.SECP256R1()) if alg == "ES256" else ed25519.Ed25519PrivateKey.generate()
        return cls(kid or f"{alg.lower()}-key", alg, private)

    @property
    def public_jwk(self) -> dict[str, str]:
        codec = ECAlgorithm if self.alg == "ES256" else OKPAlgorithm
        jwk = json.loads(codec.to_jwk(self.private.public_key()))
        return {**jwk, "kid": self.kid}

    @property
    def private_jwk(self) -> dict[str, str]:
        codec = ECAlgorithm if self.alg == "ES256" else OKPAlgorithm
        return {**json.loads(codec.to_jwk(self.private)), "kid": self.kid}

    def sign(self, claims: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
        return jwt.encode(claims, self.private, algorithm=self.alg, headers={"kid": self.kid, **(headers or {})})

    def token(self, widget_id: str, sub: str = "user_42", lifetime: int = 3600, **claims: Any) -> str:
        """A valid visitor token for this widget, unless the claims say otherwise."""
        now = int(time.time())
        return self.sign({"aud": widget_id, "sub": sub, "iat": now, "exp": now + lifetime, **claims})
