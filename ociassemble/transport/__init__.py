"""Where images go and come from on disk: OCI layouts and archives, named as skopeo names them."""
