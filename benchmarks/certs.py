"""The TLS scenarios' certificate, made at run time with ``trustme`` (as the tests do).

A throwaway test CA issues an ECDSA P-256 certificate for 127.0.0.1; every
TLS server of a run loads it (chain and key, PEM files in the run's temporary
directory). The load generator does not verify it: what is measured is the
handshake and the record layer, not a trust decision.
"""

from __future__ import annotations

from pathlib import Path


def unavailable() -> str | None:
    """None if certificates can be made, else why not."""
    try:
        import trustme  # noqa: F401  # pyright: ignore[reportUnusedImport]
    except ImportError:
        return "trustme is not installed (pip install --group bench)"
    return None


def make(directory: Path) -> tuple[Path, Path]:
    """Write ``cert.pem`` (the chain) and ``key.pem`` into ``directory``; return their paths."""
    import trustme

    leaf = trustme.CA().issue_cert("127.0.0.1", "localhost")
    cert, key = directory / "cert.pem", directory / "key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    return cert, key
