"""The vast.ai marketplace simulator: a seeded market model, a process runner for instances, and an HTTP
server speaking the part of vast's REST API the `vastai` client uses (plus an admin API under /sim/v1/).

Layout: `entities` (nouns), `catalog` (the seeded market), `model` (renting and priority rules),
`disruptions` and `events` (rivals, outages, zombies), `ledger` (billing), `runner` and `nvidia_smi`
(instances as local process groups), `query` and `fields` (vast's query language and JSON rows), `server`,
`admin`, `quirks` (HTTP), `simulator` (assembly, ticker, uvicorn thread), `cli` (`vastfleet sim serve`).
`replay/` is the discrete-event benchmark engine. Nothing outside `sim` imports it but the CLI and tests.
"""
