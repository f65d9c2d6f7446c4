"""Layers and the image: digests, OCI types, the layer writer, compression, the blob cache, assembling."""
