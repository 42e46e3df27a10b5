"""The compute of a screening (the service's side is `app/screenings`): the RQ jobs (`jobs`, `shards`), the
screening itself (`screening`), its per-row part (`rows`), the blocked similarity engine (`similarity`,
`similarity_tiles`, `similarity_bf16`), the anchor signal (`anchors`), the risk score (`risk`), the findings
and audit, and the progress plan."""
