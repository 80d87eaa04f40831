"""The xDS cache and server: serves snapshots, never builds them."""
