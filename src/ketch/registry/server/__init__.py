"""``ketch registry serve``: an OCI distribution registry on a storage driver."""
