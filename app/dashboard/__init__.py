"""The dashboard: server-rendered pages over the API's own services, and the standalone HTML report."""
