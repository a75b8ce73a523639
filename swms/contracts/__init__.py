"""Pydantic contracts for every RPC input/output and every event payload (see docs/contracts.md)."""
