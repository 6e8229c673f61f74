"""Anyreach's test-and-demo LiveKit agent worker (see docs/agents.md)."""
