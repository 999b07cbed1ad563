"""Images: content store, snapshots, formats, and base images made without a registry."""
