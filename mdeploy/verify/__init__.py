"""Verification: parity of every artifact against the canonical model, and accuracy gates."""
