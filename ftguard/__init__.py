"""ftguard's Python client (`from ftguard.client import Client`). The server lives in `app` and `workers`;
this package imports neither, so a pipeline can install ftguard and use the client without loading torch."""
