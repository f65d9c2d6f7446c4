"""Signing what is pushed, as cosign does: keys, the simple-signing payload, DSSE envelopes, SLSA provenance.

Pure documents and cryptography, no registry: ``registry.signature`` stores and reads
them beside an image (the ``sha256-<hex>.sig`` / ``.att`` tags, OCI 1.1 referrers).
"""
