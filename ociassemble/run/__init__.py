"""Running an image without a daemon: unpack its layers, then start it in namespaces."""
