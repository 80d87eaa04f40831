"""Sources fill the ResourceStore: a directory of YAML/JSON files, or the Kubernetes API."""
