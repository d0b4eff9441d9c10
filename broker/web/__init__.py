"""The web faces of the broker: a JSON delivery API for recipient systems and a read-only
console for the privacy officer (FG). Both sit on `broker.app.service.Broker`, on either backend.

  app.py            the ASGI app factory (FastAPI), security headers, request logging
  body_limit.py     the request-body limit (413 while reading, before any route)
  worker.py         the one thread that owns the Broker (its SQLite handles are thread-bound)
  state.py          the web's own small SQLite file: token hashes, FG accounts, acks
  auth.py           API tokens and FG passwords (hashed only), the request guards
  recipient_api.py  /v1/...: streams, records (long-poll), ack
  console.py        /console/...: the FG pages; console_views.py shapes data for them
"""
