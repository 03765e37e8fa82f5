"""Oracles and helpers for the CO-RE tests (libbpf differential helper, hand-built BTF)."""
